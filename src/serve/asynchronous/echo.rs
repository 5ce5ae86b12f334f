//! The echo on the async runtime: the notes' `handle_client` as an `async
//! fn`, and the model's `run`, which hands [`accept_clients`]
//! one such task per client. The chat's task stands on the same runtime.
//!
//! The lab's part (`src/lab/`, skippable on a first read): the traffic
//! each task counts for `--stats`, the executor's meter (turns, stalls),
//! `--work` and its `--offload` pool, `--crash-on`.

use std::future::Future;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::pin::{Pin, pin};
use std::rc::Rc;

use super::accept_clients;
use super::executor::Executor;
use super::reactor::{Async, Reactor, TimedOut, Timeout, sleep, timeout};
use crate::lab::live::Traffic;
use crate::lab::meter::Meter;
use crate::lab::offload::Offload;
use crate::lab::work::WorkKind;
use crate::serve::Context;
use crate::serve::accept::Visit;
use crate::stats::Ending;

/// Serves every client from this thread until shutdown.
///
/// # Errors
/// If the poller fails or the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    // Made before the executor, so that it outlives every task.
    let pool = match (ctx.config.work, ctx.config.offload) {
        (Some(work), threads) if work.blocks() && threads > 0 => {
            Some(Offload::start(ctx, threads, "async")?)
        }
        _ => None,
    };
    let traffic = Traffic::default();
    let reactor = Reactor::new(ctx.config.poller)?;
    reactor.set_budget(ctx.config.budget);
    reactor.trace().set_on(ctx.config.trace);
    let executor =
        Executor::new(reactor.clone()).metered(Meter::new(ctx, "async"), &traffic, |_| {});
    let listener = Async::new(listener, &reactor)?;
    let clients = &Clients {
        ctx,
        reactor: &reactor,
        pool: pool.as_ref(),
        traffic: &traffic,
    };
    let accepting = accept_clients(
        listener,
        ctx,
        &reactor,
        &traffic,
        executor.spawner(),
        |stream, visit| handle_client(stream, visit, clients),
    );
    let served = executor.block_on(accepting);
    // Cancel every client task still running (closing its socket), then
    // write the last line.
    executor.cancel_all();
    executor.report(std::time::Instant::now(), true);
    drop(executor);
    served?
}

/// What every client task shares: the settings and counters, the reactor,
/// and the offload pool if there is one. Tasks hold one reference to it,
/// not a copy: 24 bytes less in each.
struct Clients<'a> {
    ctx: &'a Context,
    reactor: &'a Rc<Reactor>,
    pool: Option<&'a Offload>,
    traffic: &'a Traffic,
}

impl<'a> Clients<'a> {
    /// Awaits `future` for at most `--idle-timeout`, if one is set. (The
    /// setting is read here, where it is used, rather than kept in each
    /// task.)
    fn limit<'f, F: Future>(&self, future: Pin<&'f mut F>) -> Timeout<'f, F>
    where
        'a: 'f,
    {
        timeout(self.reactor, self.ctx.config.idle_timeout, future)
    }
}

/// The notes' `handle_client`: echo until the client leaves.
///
/// Written as a function that returns an `async move` block rather than
/// an `async fn`: the compiler copies an `async fn`'s arguments into its
/// body's locals, and a suspended task then holds them twice (rust-lang
/// issue 62958); the block uses what it captured in place. The settings
/// are read through `clients` for the same reason: each field unpacked
/// into a local would be kept beside it. Every byte here is in every idle
/// client (see `docs/performance.md`).
fn handle_client<'a>(
    stream: Async<TcpStream>,
    visit: Visit<'a>,
    clients: &'a Clients<'a>,
) -> impl Future<Output = ()> + 'a {
    let mut client = Client { stream, visit };
    async move {
        let ending = loop {
            let data = match clients.limit(pin!(client.stream.recv())).await {
                Ok(Ok(data)) if data.is_empty() => break Ending::Closed,
                Ok(Ok(data)) => data,
                // Nothing is held while it receives.
                Ok(Err(e)) => break Ending::from_read_error(e),
                Err(TimedOut) => {
                    clients.reactor.trace().here(format_args!(
                        "idle timeout: the timer was ready first, and `timeout` dropped the unfinished `recv` future: cancelled (asyncio's wait_for would raise CancelledError inside it; Rust just never polls it again)"
                    ));
                    break Ending::IdleTimeout;
                }
            };
            clients.traffic.read(data.len());
            crate::lab::crash::check(&data);
            if let Some(work) = clients.ctx.config.work {
                // `--work` before the echo (see chapter 7).
                match (work.kind, clients.pool) {
                    // The notes' `await asyncio.sleep(...)`: other tasks run.
                    (WorkKind::Wait, _) => sleep(clients.reactor, work.duration).await,
                    // `await loop.run_in_executor(pool, job)`.
                    (_, Some(pool)) => drop(pool.run(work, data.to_vec()).await),
                    // `time.sleep` or computing inside the coroutine: the
                    // whole loop waits.
                    (_, None) => work.block(&data, None),
                }
            }
            match clients.limit(pin!(client.stream.write_all(&data))).await {
                Ok(Ok(())) => {
                    client.visit.bytes += data.len() as u64;
                    clients.traffic.wrote(data.len());
                }
                Ok(Err(e)) => break Ending::Failed(e),
                Err(TimedOut) => break Ending::IdleTimeout,
            }
        };
        client.visit.ends(ending);
    }
}

/// A client task's own state. Its fields drop in this order, however the
/// task ends (returning, or dropped by the executor at shutdown): the
/// socket closes before the visit logs the end. (The block captures each
/// field on its own, and fields captured whole drop in their struct's
/// order: rust-lang PR 89208.) Nothing moves out of it, so the task keeps
/// no drop flag; its fields are named in place, since a reference bound
/// to each would be kept in the task too.
struct Client<'a> {
    stream: Async<TcpStream>,
    visit: Visit<'a>,
}
