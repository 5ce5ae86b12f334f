//! What every model receives besides its listener: the user's settings
//! ([`Config`], with its defaults), and the [`Context`] they travel in with
//! the shutdown handle and the counters. Re-exported by `serve`, so that a
//! model names them `super::Context`, wherever they live.

use std::io;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;

use super::{Mode, list_of};
use crate::lab::work::Work;
use crate::lab::{live, stall};
use crate::net::{Blocking, DEFAULT_BACKLOG};
use crate::poller::Backend;
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// How many bytes a model reads from a socket at once: one `read()` moves up
/// to this much, so a 16 MiB payload takes about a thousand reads.
pub const READ_BUFFER_SIZE: usize = 16 * 1024;

/// The settings a user chooses for a server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Threads in the thread pool (the notes use 20).
    pub workers: NonZeroUsize,
    /// Accepted clients that may wait for a free worker before the acceptor
    /// stops accepting and further clients wait in the kernel's backlog.
    pub queue: usize,
    /// The `listen()` backlog.
    pub backlog: u32,
    /// Disconnect a client that sent nothing (or took nothing) for this long.
    pub idle_timeout: Option<Duration>,
    /// Clients served at once; more are accepted and closed at once.
    pub max_connections: NonZeroUsize,
    /// Independent event loops (one-thread models only), each on its own
    /// thread with its own listener; 0 means one per CPU.
    pub threads: usize,
    /// Silence the per-connection log lines.
    pub quiet: bool,
    /// What a handler does with each chunk before echoing it.
    pub work: Option<Work>,
    /// Threads beside each one-thread loop that run its blocking `work`
    /// (0: none, the loop runs it itself).
    pub offload: usize,
    /// `--offload-processes`: each of those threads hands its jobs to a
    /// worker process of its own.
    pub offload_processes: bool,
    /// The stack of each client thread (`threads`).
    pub stack_size: usize,
    /// Thread pool: every worker holds one lock while it computes, a
    /// stand-in for CPython's GIL; the loops' `--offload` threads too.
    pub global_lock: bool,
    /// Warn when a one-thread loop runs longer than this without waiting.
    pub slow_handler: Option<Duration>,
    /// The readiness backend the one-thread loops wait with.
    pub poller: Backend,
    /// The async model's cooperative budget: I/O operations a task may
    /// complete per poll before it yields (0: no budget).
    pub budget: u32,
    /// `--naive-send` (selector): each echo is a blocking write inside the
    /// handler, wrong on purpose.
    pub naive_send: bool,
    /// `--racy-register` (chat on threads and async): wait this long between
    /// checking a name and taking it, wrong on purpose.
    pub racy_register: Option<Duration>,
    /// `--lock-order-bug` (chat on threads): unregister a too-slow receiver
    /// inside its outbox's lock, wrong on purpose: a deadlock.
    pub lock_order_bug: bool,
    /// `--trace` (statemachine and async): each task's life on stderr.
    pub trace: bool,
    /// `--crash-on`: a handler that receives this aborts the process.
    pub crash_on: Option<String>,
    /// Under `serve --processes`: this process is worker number this.
    pub worker: Option<usize>,
    /// `--stats`: a line of counters per loop every this long.
    pub stats: Option<Duration>,
    /// `--stats-json`: the same lines, as JSON, into this file.
    pub stats_json: Option<live::JsonSink>,
    /// What the server speaks: echo, or the chat.
    pub protocol: Protocol,
}

/// What a server speaks.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// RFC 862: every byte comes back to its sender.
    #[default]
    Echo,
    /// The notes' chat: register, list, chat, quit.
    Chat,
}

/// The default `--slow-handler`: asyncio's debug mode warns of a callback
/// slower than 100 ms, and so do we.
pub const DEFAULT_SLOW_HANDLER: Duration = Duration::from_millis(100);

/// The stack each client thread of `threads` gets by default. The echo
/// needs its 16 KiB read buffer and a few frames; Rust's default of 2 MiB
/// per thread would reserve 2 GiB of address space for a thousand clients.
/// Linux touches only the pages used, so what a client really costs shows
/// in the server's resident memory, not here.
pub const DEFAULT_STACK_SIZE: usize = 128 * 1024;

/// I/O operations an async task may complete per poll before it must
/// yield (`serve --budget`): tokio's number. An echo spends two per
/// message (a read and a write), so a client that never pauses gets 64
/// echoes of up to 4 KiB, about a quarter of a millisecond, before the
/// others' turn.
pub const DEFAULT_BUDGET: u32 = 128;

/// The notes' thread pool size: `ThreadPoolExecutor(max_workers=20)`.
pub const DEFAULT_WORKERS: NonZeroUsize = NonZeroUsize::new(20).unwrap();

/// Clients a server holds at once by default. Each costs a descriptor and
/// buffers (see each model's limits); 10,000 stays within a 20,000-descriptor
/// limit and a few hundred MiB in the worst case.
pub const DEFAULT_MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::new(10_000).unwrap();

/// How many accepted clients may wait for a worker by default. Each holds a
/// descriptor and a little kernel memory; beyond it, the kernel's backlog
/// holds them at no cost to us.
pub const DEFAULT_QUEUE: usize = 16;

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: DEFAULT_WORKERS,
            queue: DEFAULT_QUEUE,
            backlog: DEFAULT_BACKLOG,
            idle_timeout: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            threads: 1,
            quiet: false,
            work: None,
            offload: 0,
            offload_processes: false,
            stack_size: DEFAULT_STACK_SIZE,
            global_lock: false,
            slow_handler: Some(DEFAULT_SLOW_HANDLER),
            poller: Backend::default(),
            budget: DEFAULT_BUDGET,
            naive_send: false,
            racy_register: None,
            lock_order_bug: false,
            trace: false,
            crash_on: None,
            worker: None,
            stats: None,
            stats_json: None,
            protocol: Protocol::Echo,
        }
    }
}

/// What every model receives besides its listener.
pub struct Context {
    /// The user's settings.
    pub config: Config,
    /// Triggered to stop the server.
    pub shutdown: Shutdown,
    /// Counters and the per-connection log.
    pub stats: Stats,
    /// The `--global-lock`: held while a worker computes. One per process,
    /// as CPython's GIL.
    pub global_lock: Arc<Mutex<()>>,
    /// What the blocking models' threads (the chat's threads too) count
    /// for `--stats`. The loops keep their own counters, on their own
    /// thread.
    pub traffic: live::Traffic<std::sync::atomic::AtomicU64>,
}

impl Context {
    /// A context with a fresh shutdown handle and fresh counters.
    ///
    /// # Errors
    /// If the shutdown's bell cannot be made (out of descriptors).
    pub fn new(config: Config) -> io::Result<Self> {
        Ok(Self::with_shutdown(config, Shutdown::new()?))
    }

    /// A context with fresh counters that stops when `shutdown` is
    /// triggered (made early, so that signals reach it from the start).
    pub fn with_shutdown(config: Config, shutdown: Shutdown) -> Self {
        if let Some(word) = &config.crash_on {
            crate::lab::crash::arm(word);
        }
        let mut stats = Stats::new(config.quiet, config.max_connections.get());
        if config.protocol == Protocol::Chat {
            stats = stats.sending();
        }
        Context {
            config,
            shutdown,
            stats,
            global_lock: Arc::default(),
            traffic: live::Traffic::default(),
        }
    }
}

impl Context {
    /// A `--stats` reporter for the loop called `name`, if `--stats` is on.
    pub fn reporter(&self, name: &str) -> Option<live::Reporter> {
        let interval = self.config.stats?;
        let name = match std::thread::current().name() {
            // With --threads, each loop's thread is named `{mode}-{i}`.
            Some(thread) if thread.starts_with(name) && thread != format!("{name}-server") => {
                thread.to_owned()
            }
            _ => name.to_owned(),
        };
        // With --processes, each worker's lines say which worker wrote them.
        let name = match self.config.worker {
            Some(worker) => format!("{name}-w{worker}"),
            None => name,
        };
        Some(live::Reporter::new(
            name,
            interval,
            self.config.stats_json.clone(),
        ))
    }

    /// The stall watch of the one-thread loop called `model`: it warns
    /// past `--slow-handler` and counts turns for `--stats`.
    pub fn stall_watch(&self, model: &'static str) -> stall::StallWatch<'_> {
        let config = &self.config;
        let blocking_work = config.work.is_some_and(|w| w.blocks()) && config.offload == 0;
        let advice = match model {
            _ if blocking_work => stall::Advice::BlockingWork,
            _ if config.naive_send => stall::Advice::BlockingSend,
            "async" if config.budget == 0 => stall::Advice::NoBudget,
            _ => stall::Advice::NeverIdle,
        };
        stall::StallWatch::new(model, config.slow_handler, &self.stats)
            .advising(advice)
            .counting_turns(config.stats.is_some())
    }

    /// The lock a blocking worker computes under: the global lock with
    /// `--global-lock`, none otherwise.
    pub fn work_lock(&self) -> Option<&Mutex<()>> {
        self.config.global_lock.then_some(&*self.global_lock)
    }
}

impl Config {
    /// How many loops `mode` runs: `threads` (0: one per CPU) for the
    /// one-thread models, always 1 for the blocking ones.
    ///
    /// # Errors
    /// `threads` other than 1 for a blocking model.
    pub fn loops(&self, mode: Mode) -> anyhow::Result<usize> {
        match (mode.blocking(), self.threads) {
            (Blocking::Yes, 1) => Ok(1),
            (Blocking::Yes, _) => {
                bail!(
                    "--threads applies to {} only, not to {mode}",
                    list_of(&Mode::LOOPS)
                )
            }
            (Blocking::No, 0) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
            (Blocking::No, n) => Ok(n),
        }
    }
}
