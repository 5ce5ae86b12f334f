//! `echo-lab notes`: the notes' programs, in Rust, one short file each, in
//! the notes' order. Each step is the notes' listing and nothing more: no
//! limits, no `--stats`, no graceful shutdown (Ctrl-C ends it, as it ends
//! the Python). The lab's models (`src/serve/`) grew from them; each step
//! names the one it grows into, and the tutorial says what the model adds.
//!
//! A step imports nothing of echo-lab's but this file: [`listen`], the
//! notes' `setup_listening_socket` on echo-lab's one socket setup, and
//! [`Watched`], the `polling` registration that deletes itself, which the
//! loops share (the crate's rule: a source must leave the poller before it
//! closes; the type lives in `poller/`, with every `unsafe` of registering).

use std::net::TcpListener;

use crate::net::{Blocking, DEFAULT_BACKLOG, bind_listener};
use crate::parse::HostPort;
pub use crate::poller::Watched;

pub mod async_await;
pub mod callbacks;
pub mod chat;
pub mod chat_async;
pub mod chat_threads;
pub mod io_loop;
pub mod pool;
pub mod round_robin;
pub mod select_queues;
pub mod sequential;
pub mod threads;
pub mod wait_read;
pub mod yield_from;

/// What a step is given from the command line.
#[derive(Clone, Debug)]
pub struct Args {
    /// Where to listen (the notes' `127.0.0.1:55555` by default).
    pub addr: HostPort,
    /// The pool's size, for the steps that have one (the notes' 20).
    pub workers: usize,
}

/// One of the notes' programs.
pub struct Step {
    /// Its name on the command line.
    pub name: &'static str,
    /// The note and listing it mirrors.
    pub mirrors: &'static str,
    /// The lab model it grows into.
    pub grows_into: &'static str,
    /// Runs it until the process is stopped.
    pub run: fn(&Args) -> anyhow::Result<()>,
}

/// Every step, in the notes' order.
pub const STEPS: [Step; 11] = [
    Step {
        name: "sequential",
        mirrors: "note 1, \"Sequential Server\": run_server and handle_client",
        grows_into: "serve --mode sequential",
        run: sequential::run,
    },
    Step {
        name: "threads",
        mirrors: "note 1, \"OS threads\": a thread per client, before the pool",
        grows_into: "serve --mode threads",
        run: threads::run,
    },
    Step {
        name: "pool",
        mirrors: "note 1, ThreadPoolExecutor(max_workers=20)",
        grows_into: "serve --mode threadpool",
        run: pool::run,
    },
    Step {
        name: "callbacks",
        mirrors: "note 1, \"I/O Multiplexing and event loops\": the selectors callback loop",
        grows_into: "serve --mode selector",
        run: callbacks::run,
    },
    Step {
        name: "select-queues",
        mirrors: "note 3, the select() server with message queues and a write list",
        grows_into: "serve --mode selector",
        run: select_queues::run,
    },
    Step {
        name: "round-robin",
        mirrors: "note 1, \"Generators as Coroutines\": EventLoopNoIO, bare yields",
        grows_into: "serve --mode statemachine",
        run: round_robin::run,
    },
    Step {
        name: "wait-read",
        mirrors: "note 1, generators yielding ('WAIT_READ', sock) to a selector loop",
        grows_into: "serve --mode statemachine",
        run: wait_read::run,
    },
    Step {
        name: "yield-from",
        mirrors: "note 1, \"yield from\": sock_accept, sock_recv, sock_sendall",
        grows_into: "serve --mode statemachine",
        run: yield_from::run,
    },
    Step {
        name: "async",
        mirrors: "note 1, \"async/await\": async def on a loop of its own",
        grows_into: "serve --mode async",
        run: async_await::run,
    },
    Step {
        name: "chat-threads",
        mirrors: "the chat, on a thread per client with one lock",
        grows_into: "serve --protocol chat --mode threads",
        run: chat_threads::run,
    },
    Step {
        name: "chat-async",
        mirrors: "the chat on the async step: one thread, no lock (asyncio.start_server)",
        grows_into: "serve --protocol chat --mode async",
        run: chat_async::run,
    },
];

/// The steps that serve the echo (all but the chats): what `compare`,
/// `bench` and `probe` can measure.
pub fn echo_steps() -> impl Iterator<Item = &'static str> {
    STEPS
        .iter()
        .map(|step| step.name)
        .filter(|name| !name.starts_with("chat-"))
}

/// The step called `name`.
pub fn find(name: &str) -> Option<&'static Step> {
    STEPS.iter().find(|step| step.name == name)
}

/// The notes' `setup_listening_socket`: bind, listen (SO_REUSEADDR, as
/// the notes set it), say where, as every echo-lab server does.
///
/// # Errors
/// The address cannot be bound.
pub fn listen(addr: &HostPort, blocking: Blocking) -> anyhow::Result<TcpListener> {
    let listener = bind_listener(addr, DEFAULT_BACKLOG, blocking, false)?;
    println!("listening on {}", listener.local_addr()?);
    Ok(listener)
}
