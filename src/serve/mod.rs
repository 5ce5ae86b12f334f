//! The servers: one echo protocol, a concurrency model each (and a chat
//! on most of them), in families, one folder each.
//!
//! Every model is started the same way: [`run`] hands it a listener built by
//! [`crate::net::bind_listener`] and a [`Context`] (its settings, the
//! shutdown handle and the counters). A model returns when the shutdown is
//! triggered, after closing every connection it holds.
//!
//! Read the families in the order of the notes:
//! 1. [`blocking`]: one thread blocked on one socket at a time, around
//!    one accept loop: [`blocking::sequential`] (one client at a time),
//!    [`blocking::threads`] (a thread per client),
//!    [`blocking::forking`] (a process per client) and
//!    [`blocking::threadpool`] (a fixed pool of threads).
//! 2. [`readiness`]: one thread, a readiness loop, on its kit (the
//!    listener, the deadlines): [`readiness::selector`], a handler per
//!    ready socket.
//! 3. [`statemachine`]: the same loop driving hand-written generators.
//! 4. [`asynchronous`]: async/await on an executor and reactor of our own.
//! 5. [`completion`]: one thread, one io_uring: completions, not readiness.
//! 6. [`chat`]: the notes' chat server, on every model but sequential and
//!    forking (on `threads` and `threadpool` it is the same thread per
//!    client).
//!
//! Beside the families, what they all share: [`accept`], the one accept
//! step (admit, prepare, sort the failures); `Context`, the settings and
//! counters a model is handed; [`buffers`], the read buffers the
//! statemachine and async loops lend their tasks only while they hold
//! data; and [`processes`], which runs any model but forking as worker
//! processes under a master. The instruments (`--stats`, `--work`,
//! stalls, traces, offload) are [`crate::lab`]'s.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context as _, bail};

use crate::net::{Blocking, bind_listener, claim_port};
use crate::parse::HostPort;
use crate::stats::Stats;

pub use context::{
    Config, Context, DEFAULT_BUDGET, DEFAULT_MAX_CONNECTIONS, DEFAULT_QUEUE, DEFAULT_SLOW_HANDLER,
    DEFAULT_STACK_SIZE, DEFAULT_WORKERS, Protocol, READ_BUFFER_SIZE,
};

pub mod accept;
pub mod asynchronous;
pub mod blocking;
pub mod buffers;
pub mod chat;
#[cfg(target_os = "linux")]
pub mod completion;
#[cfg(not(target_os = "linux"))]
#[path = "completion_elsewhere.rs"]
pub mod completion;
mod context;
pub mod processes;
pub mod readiness;
pub mod statemachine;
pub(crate) mod turns;

/// The concurrency models, in the order the notes introduce them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One client at a time: accept, echo until it leaves, accept the next.
    Sequential,
    /// A thread per client, as many as there are clients.
    Threads,
    /// A process per client: the parent accepts and forks, the child
    /// serves one client and exits.
    Forking,
    /// A fixed pool of threads, each blocking on one client; a bounded queue.
    Threadpool,
    /// One thread, a readiness loop, a handler per ready socket.
    Selector,
    /// One thread; each client a hand-written state machine (a generator).
    #[value(alias = "generator")]
    Statemachine,
    /// One thread; async/await on an executor and reactor of our own.
    Async,
    /// One thread, one io_uring: completions instead of readiness (Linux).
    Completion,
}

impl Mode {
    /// Every model, in the order of the notes.
    pub const ALL: [Mode; 8] = [
        Mode::Sequential,
        Mode::Threads,
        Mode::Forking,
        Mode::Threadpool,
        Mode::Selector,
        Mode::Statemachine,
        Mode::Async,
        Mode::Completion,
    ];

    /// The models that serve every client from one readiness loop (the
    /// ones `--poller` applies to; completion is one thread too, but waits
    /// for completions, not readiness).
    pub const READINESS: [Mode; 3] = [Mode::Selector, Mode::Statemachine, Mode::Async];

    /// The models that serve every client from one loop of their own,
    /// readiness or completion: `--threads` runs several.
    pub const LOOPS: [Mode; 4] = [
        Mode::Selector,
        Mode::Statemachine,
        Mode::Async,
        Mode::Completion,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Threads => "threads",
            Mode::Forking => "forking",
            Mode::Threadpool => "threadpool",
            Mode::Selector => "selector",
            Mode::Statemachine => "statemachine",
            Mode::Async => "async",
            Mode::Completion => "completion",
        }
    }

    /// Whether the model blocks in `accept()`/`read()` or waits for
    /// readiness and needs non-blocking sockets.
    pub fn blocking(self) -> Blocking {
        match self {
            Mode::Sequential | Mode::Threads | Mode::Forking | Mode::Threadpool => Blocking::Yes,
            Mode::Selector | Mode::Statemachine | Mode::Async | Mode::Completion => Blocking::No,
        }
    }

    /// Whether its listener (and its clients' sockets) must block: the
    /// blocking models block in calls; io_uring waits inside the kernel
    /// and would report a non-blocking socket's `EAGAIN` instead.
    pub fn blocking_sockets(self) -> Blocking {
        match self {
            Mode::Completion => Blocking::Yes,
            other => other.blocking(),
        }
    }
}

/// Names models as a sentence does: `threadpool`, `selector and async`,
/// `selector, statemachine and async`.
pub fn list_of(modes: &[Mode]) -> String {
    match modes {
        [] => String::new(),
        [one] => one.name().to_owned(),
        [rest @ .., last] => {
            let rest: Vec<&str> = rest.iter().map(|m| m.name()).collect();
            format!("{} and {last}", rest.join(", "))
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The listening sockets of a server: one, or one per loop with
/// `--threads`, all on the same port (SO_REUSEPORT).
pub struct Listeners(Vec<TcpListener>);

impl Listeners {
    /// The address all of them listen on, with its real port.
    ///
    /// # Errors
    /// As `getsockname(2)`.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0[0].local_addr()
    }

    /// The sockets, one per loop.
    pub fn sockets(&self) -> &[TcpListener] {
        &self.0
    }

    /// One listener, bound elsewhere (a worker's, inherited).
    pub fn one(listener: TcpListener) -> Self {
        Listeners(vec![listener])
    }

    /// The listeners, to be handed out.
    pub fn into_vec(self) -> Vec<TcpListener> {
        self.0
    }
}

/// Binds the listeners `mode` needs on `addr`.
///
/// # Errors
/// The address cannot be bound, or `--threads` does not apply to `mode`.
pub fn bind(mode: Mode, addr: &HostPort, config: &Config) -> anyhow::Result<Listeners> {
    bind_group(mode, addr, config, config.loops(mode)?)
}

/// Binds `count` listeners on `addr` for `mode`: one as it is, or a group
/// of `count` on one port with SO_REUSEPORT, which the kernel spreads new
/// connections over (`--threads`, and a seat per `--processes` worker).
///
/// # Errors
/// The address cannot be bound.
pub fn bind_group(
    mode: Mode,
    addr: &HostPort,
    config: &Config,
    count: usize,
) -> anyhow::Result<Listeners> {
    if count <= 1 {
        let listener = bind_listener(addr, config.backlog, mode.blocking_sockets(), false)?;
        return Ok(Listeners(vec![listener]));
    }
    // A port held by anyone else is "already in use", as with one loop;
    // claiming it also resolves port 0 for every loop.
    let port: HostPort = claim_port(addr)?.into();
    let listeners = (0..count)
        .map(|_| bind_listener(&port, config.backlog, mode.blocking_sockets(), true))
        .collect::<anyhow::Result<_>>()?;
    Ok(Listeners(listeners))
}

/// Serves with `mode` until `ctx.shutdown` is triggered: one loop per
/// listener, each on its own thread when there are several (shared
/// nothing but the counters and the shutdown handle, as nginx workers).
///
/// # Errors
/// Only failures of the server as a whole (the listener broke, a thread
/// could not be started); a failing connection is logged and closed.
pub fn run(mode: Mode, listeners: Listeners, ctx: &Context) -> anyhow::Result<()> {
    let mut listeners = listeners.0;
    if listeners.len() == 1 {
        return run_one(mode, listeners.remove(0), ctx);
    }
    std::thread::scope(|scope| {
        let loops: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                std::thread::Builder::new()
                    .name(format!("{mode}-{i}"))
                    .spawn_scoped(scope, move || {
                        let served = run_one(mode, listener, ctx);
                        // One loop failing stops the others.
                        if served.is_err() {
                            ctx.shutdown.trigger();
                        }
                        served
                    })
            })
            .collect::<Result<_, _>>()
            .inspect_err(|_| ctx.shutdown.trigger())?;
        let mut result = Ok(());
        for handle in loops {
            let served = handle
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a {mode} loop panicked")));
            result = result.and(served);
        }
        result
    })
}

fn run_one(mode: Mode, listener: TcpListener, ctx: &Context) -> anyhow::Result<()> {
    let served = match mode {
        _ if ctx.config.protocol == Protocol::Chat => chat::run(mode, listener, ctx),
        Mode::Sequential => blocking::sequential::run(listener, ctx),
        Mode::Threads => blocking::threads::run(listener, ctx),
        Mode::Forking => blocking::forking::run(listener, ctx),
        Mode::Threadpool => blocking::threadpool::run(listener, ctx),
        Mode::Selector => readiness::selector::run(listener, ctx),
        Mode::Statemachine => statemachine::run(listener, ctx),
        Mode::Async => asynchronous::run(listener, ctx),
        Mode::Completion => completion::run(listener, ctx),
    };
    served.with_context(|| format!("the {mode} server failed"))
}

/// A server running on a thread of this process: what tests and tools use.
/// Dropping it shuts the server down and waits for it.
pub struct Server {
    addr: SocketAddr,
    ctx: Arc<Context>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and starts `mode` on it.
    ///
    /// # Errors
    /// As [`bind`].
    pub fn start(mode: Mode, addr: &HostPort, config: Config) -> anyhow::Result<Server> {
        let listeners = bind(mode, addr, &config)?;
        Self::start_on(mode, listeners, config)
    }

    /// Starts `mode` on listeners already bound by [`bind`].
    ///
    /// # Errors
    /// The shutdown's bell or the thread cannot be made.
    pub fn start_on(mode: Mode, listeners: Listeners, config: Config) -> anyhow::Result<Server> {
        let addr = listeners.local_addr()?;
        let ctx = Arc::new(Context::new(config)?);
        let thread_ctx = ctx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{mode}-server"))
            .spawn(move || run(mode, listeners, &thread_ctx))?;
        Ok(Server {
            addr,
            ctx,
            thread: Some(thread),
        })
    }

    /// The address the server listens on, with its real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.ctx.stats
    }

    /// Whether the server has stopped by itself (it failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Shuts the server down and returns how its run ended.
    ///
    /// # Errors
    /// The server failed, or its thread panicked.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> anyhow::Result<()> {
        self.ctx.shutdown.trigger();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("the server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn generator_is_another_name_for_statemachine() {
        assert_eq!(Mode::from_str("generator", false), Ok(Mode::Statemachine));
    }

    #[test]
    fn mode_names_round_trip() {
        for &mode in Mode::value_variants() {
            assert_eq!(Mode::from_str(mode.name(), false), Ok(mode));
        }
    }
}
