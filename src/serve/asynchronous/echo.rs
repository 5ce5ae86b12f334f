//! The echo on the async runtime: the notes' `handle_client` as an `async
//! fn`, and the model's `run`, which hands [`accept_clients`]
//! one such task per client. The chat's task stands on the same runtime.

use std::future::Future;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::time::Duration;

use super::accept_clients;
use super::executor::Executor;
use super::reactor::{Async, Reactor, TimedOut, sleep, timeout};
use crate::serve::Context;
use crate::serve::accept::Visit;
use crate::serve::live::Traffic;
use crate::serve::meter::Meter;
use crate::serve::offload::Offload;
use crate::serve::work::WorkKind;
use crate::stats::Ending;

/// Serves every client from this thread until shutdown.
///
/// # Errors
/// If the poller fails or the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    // Made before the executor, so that it outlives every task.
    let pool = match (ctx.config.work, ctx.config.offload) {
        (Some(work), threads) if work.blocks() && threads > 0 => {
            Some(Offload::start(threads, "async")?)
        }
        _ => None,
    };
    let traffic = Traffic::default();
    let reactor = Reactor::new(ctx.config.poller)?;
    reactor.set_budget(ctx.config.budget);
    let executor =
        Executor::new(reactor.clone()).metered(Meter::new(ctx, "async"), &traffic, |_| {});
    let listener = Async::new(listener, &reactor)?;
    let clients = Clients {
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
/// and the offload pool if there is one.
#[derive(Clone, Copy)]
struct Clients<'a> {
    ctx: &'a Context,
    reactor: &'a Rc<Reactor>,
    pool: Option<&'a Offload>,
    traffic: &'a Traffic,
}

/// The notes' `handle_client`: echo until the client leaves.
async fn handle_client(stream: Async<TcpStream>, mut visit: Visit<'_>, clients: Clients<'_>) {
    let Clients {
        ctx,
        reactor,
        pool,
        traffic,
    } = clients;
    let idle = ctx.config.idle_timeout;
    // Dropped with the task, however it ends: returning, or cancelled by
    // the executor at shutdown, when it logs the shutdown as the end.
    let ending = loop {
        let data = match limit(idle, reactor, pin!(stream.recv())).await {
            Ok(Ok(data)) if data.is_empty() => break Ending::Closed,
            Ok(Ok(data)) => data,
            Ok(Err(e)) => break Ending::Failed(e),
            Err(TimedOut) => break Ending::IdleTimeout,
        };
        traffic.read(data.len());
        crate::serve::crash::check(&data);
        if let Some(work) = ctx.config.work {
            // `--work` before the echo (see chapter 7).
            match (work.kind, pool) {
                // The notes' `await asyncio.sleep(...)`: other tasks run.
                (WorkKind::Wait, _) => sleep(reactor, work.duration).await,
                // `await loop.run_in_executor(pool, job)`.
                (_, Some(pool)) => drop(pool.run(work, data.to_vec()).await),
                // `time.sleep` or computing inside the coroutine: the
                // whole loop waits.
                (_, None) => work.block(&data, None),
            }
        }
        match limit(idle, reactor, pin!(stream.write_all(&data))).await {
            Ok(Ok(())) => {
                visit.bytes += data.len() as u64;
                traffic.wrote(data.len());
            }
            Ok(Err(e)) => break Ending::Failed(e),
            Err(TimedOut) => break Ending::IdleTimeout,
        }
    };
    drop(stream);
    visit.end(ending);
}

/// Awaits `future`, for at most `idle` if an idle timeout is set. The
/// caller pins the future in its own frame: an idle task's state holds its
/// `recv` once, and a timer only with `--idle-timeout`.
async fn limit<F: Future>(
    idle: Option<Duration>,
    reactor: &Rc<Reactor>,
    future: Pin<&mut F>,
) -> Result<F::Output, TimedOut> {
    match idle {
        Some(duration) => timeout(reactor, duration, future).await,
        None => Ok(future.await),
    }
}
