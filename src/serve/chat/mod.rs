//! The chat server: the notes' last program, on every model that serves clients at once,
//! with shared state at last.
//!
//! An echo has nothing to share: each connection is its own world. A chat
//! is all sharing. Who is registered under which name, and a way to put a
//! line in front of another connection, must be reachable from every
//! connection. The notes write it twice, and so do we:
//!
//! - [`threads`]: a thread per client, as in the notes. The registry is
//!   behind a `Mutex` in an `Arc`, because any thread may register, look up
//!   or leave at any moment; each client's outbox has its own lock, and a
//!   writer thread of its own so that no sender ever waits on a slow
//!   receiver's socket.
//! - [`selector`], [`statemachine`], [`asynchronous`] and (on Linux)
//!   `completion`: one thread. The
//!   [`room::Room`] is plain data the loop owns: no lock, no `Arc`, because
//!   only one piece of code runs at a time, and between two waits nobody
//!   else can see it half-changed. (The statemachine and async tasks are
//!   separate objects, so they share it through a `RefCell`: a borrow flag
//!   checked at run time, not a lock; no borrow is held across a wait.)
//!
//! What is the same everywhere lives in [`protocol`] (lines, commands,
//! names) and [`room`] (the registry, the rules, the outboxes), so the
//! models differ only in how they wait.
//!
//! The protocol, one command per line, UTF-8, at most 4 KiB:
//!
//! ```text
//! register,<name>     -> ok | error,<reason>
//! list                -> every registered name, comma-separated
//! chat,<name>,<text>  -> <name> gets from,<sender>,<text> | error,no such user
//! chat,*,<text>       -> everyone else gets from,<sender>,<text>
//! quit                -> the name is free; what is owed is sent, then close
//! ```
//!
//! A bad line gets `error,<reason>` and nothing else happens; five in a row
//! end the connection. (`name taken` and `no such user` are answered the
//! same way but are not bad lines: they depend on other clients, and a
//! client that leaves must not get those writing to it cut off.) A
//! receiver owed more than 256 KiB is disconnected ([`room::Outbox`] has
//! the policy). A client that has quit (or closed its side) gets
//! [`CLOSE_GRACE`] to take what it is still owed.
//!
//! Tutorial: `docs/tutorial/8-shared-state-a-chat-server.md`.

pub mod asynchronous;
#[cfg(target_os = "linux")]
pub mod completion;
pub mod counts;
pub mod lockwatch;
pub mod outbox;
pub mod protocol;
pub mod room;
pub mod selector;
pub mod statemachine;
pub mod threads;

use std::io;
use std::net::TcpListener;
use std::time::Duration;

use super::{Context, Mode};

/// How long a client that quit may take to read what it is still owed.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves the chat with `mode` until shutdown.
///
/// # Errors
/// If the model's loop fails, or for `sequential`, which cannot host a chat.
pub fn run(mode: Mode, listener: TcpListener, ctx: &Context) -> io::Result<()> {
    match mode {
        Mode::Sequential => Err(io::Error::other(SEQUENTIAL_CANNOT_CHAT)),
        Mode::Forking => Err(io::Error::other(FORKING_CANNOT_CHAT)),
        #[cfg(target_os = "linux")]
        Mode::Completion => completion::run(listener, ctx),
        #[cfg(not(target_os = "linux"))]
        Mode::Completion => super::completion::run(listener, ctx),
        // A thread per client either way: the chat's pool is unbounded.
        Mode::Threads | Mode::Threadpool => threads::run(listener, ctx),
        Mode::Selector => selector::run(listener, ctx),
        Mode::Statemachine => statemachine::run(listener, ctx),
        Mode::Async => asynchronous::run(listener, ctx),
    }
}

/// Why `--mode forking --protocol chat` is refused.
pub const FORKING_CANNOT_CHAT: &str = "forking serves each client in a process of its own, and a chat's clients must share one registry: use --mode threads, threadpool, selector, statemachine, async or completion";

/// Why `--mode sequential --protocol chat` is refused.
pub const SEQUENTIAL_CANNOT_CHAT: &str = "sequential serves one client at a time, and a chat needs two connected at once: use --mode threads, threadpool, selector, statemachine, async or completion";
