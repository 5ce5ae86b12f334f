//! The async model: `async fn` handlers on an executor and reactor of our
//! own. The notes' last server, in Rust:
//!
//! ```python
//! async def handle_client(sock):
//!     while True:
//!         data = await loop.sock_recv(sock, 4096)
//!         if not data:
//!             break
//!         await loop.sock_sendall(sock, data)
//!     sock.close()
//! ```
//!
//! `handle_client` below is that function. The compiler turns it into a
//! state machine like the one we wrote by hand in the statemachine model:
//! each `.await` is a point where it can suspend, and the locals that live
//! across one (the buffer, the byte count) become fields of the future.
//! Polling the future is `resume`; `Poll::Pending` is the `yield`.
//!
//! The runtime has two halves, each in its own file:
//! - [`reactor`]: epoll and timers. [`reactor::Async`] wraps a socket so that
//!   `read`, `write_all` and `accept` are futures; [`reactor::sleep`] and
//!   [`reactor::timeout`] are timers. The idle timeout is one of them,
//!   awaited like any I/O.
//! - [`executor`]: tasks, wakers and the ready queue, and `block_on`.
//!
//! Its limit is every single-threaded loop's: a task that computes for a
//! long time without awaiting stalls all the others. Shutdown: the accept
//! loop awaits the shutdown's bell (which a signal rings) beside the next
//! client, triggers the shutdown when it hears it and returns; dropping the
//! executor drops every client task, which closes its socket.
//!
//! Next: `completion`, one io_uring instead of readiness; then the tools
//! that measure the six models side by side.
//!
//! Tutorial: `docs/tutorial/5-async-await-from-the-ground-up.md`.

pub mod executor;
pub mod reactor;

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use executor::{Either, Executor, Spawner, select};
use reactor::{Async, Reactor, TimedOut, sleep, timeout};

use super::Context;
use super::accept::{Accepted, sort};
use super::live::Traffic;
use super::offload::Offload;
use super::work::WorkKind;
use crate::net::{ACCEPT_BACKOFF, Blocking};
use crate::stats::{Ending, Stats};

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
    let executor = Executor::new(reactor.clone())
        .watching_stalls(ctx.stall_watch("async"))
        .reporting(ctx.reporter("async"), &traffic);
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
        |stream, peer| handle_client(stream, peer, clients),
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

/// The notes' `run_server`: accept clients and spawn the task `client`
/// makes for each, until the shutdown is triggered. (The chat spawns
/// another kind of client task.)
///
/// # Errors
/// If the listener breaks.
pub async fn accept_clients<'a, F: Future<Output = ()> + 'a>(
    listener: Async<TcpListener>,
    ctx: &Context,
    reactor: &Rc<Reactor>,
    traffic: &Traffic,
    spawner: Spawner<'a>,
    client: impl Fn(Async<TcpStream>, SocketAddr) -> F,
) -> io::Result<()> {
    // A signal rings the bell; whoever hears it stops the server.
    let bell = Async::new(ctx.shutdown.bell()?, reactor)?;
    let mut rung = pin!(bell.readable());
    loop {
        let accepted = match select(listener.accept(), rung.as_mut()).await {
            Either::Left(accepted) => accepted,
            Either::Right(heard) => {
                ctx.shutdown.trigger();
                return heard;
            }
        };
        match sort(accepted, &ctx.stats, Blocking::No) {
            Some(Accepted::Client(stream, peer)) => match Async::new(stream, reactor) {
                Ok(stream) => {
                    traffic.accepted();
                    spawner.spawn(client(stream, peer));
                }
                Err(e) => ctx.stats.disconnected(peer, 0, Ending::Failed(e)),
            },
            // `Async::accept` waits out an empty backlog itself; a client
            // that vanished or was turned away leaves nothing to do.
            Some(Accepted::Empty) | None => {}
            // Out of descriptors: an awaited pause, not a spin.
            Some(Accepted::BackOff) => {
                if let Either::Right(heard) =
                    select(sleep(reactor, ACCEPT_BACKOFF), rung.as_mut()).await
                {
                    ctx.shutdown.trigger();
                    return heard;
                }
            }
            Some(Accepted::Fatal(e)) => return Err(e),
        }
    }
}

/// The notes' `handle_client`: echo until the client leaves.
async fn handle_client(stream: Async<TcpStream>, peer: SocketAddr, clients: Clients<'_>) {
    let Clients {
        ctx,
        reactor,
        pool,
        traffic,
    } = clients;
    let idle = ctx.config.idle_timeout;
    let mut log = ConnectionLog {
        stats: &ctx.stats,
        traffic,
        peer,
        bytes: 0,
        ending: None,
    };
    let ending = loop {
        let data = match limit(idle, reactor, stream.recv()).await {
            Ok(Ok(data)) if data.is_empty() => break Ending::Closed,
            Ok(Ok(data)) => data,
            Ok(Err(e)) => break Ending::Failed(e),
            Err(TimedOut) => break Ending::IdleTimeout,
        };
        traffic.read(data.len());
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
        match limit(idle, reactor, stream.write_all(&data)).await {
            Ok(Ok(())) => {
                log.bytes += data.len() as u64;
                traffic.wrote(data.len());
            }
            Ok(Err(e)) => break Ending::Failed(e),
            Err(TimedOut) => break Ending::IdleTimeout,
        }
    };
    log.ending = Some(ending);
}

/// Awaits `future`, for at most `idle` if an idle timeout is set.
async fn limit<F: Future>(
    idle: Option<Duration>,
    reactor: &Rc<Reactor>,
    future: F,
) -> Result<F::Output, TimedOut> {
    match idle {
        Some(duration) => timeout(reactor, duration, future).await,
        None => Ok(future.await),
    }
}

/// Logs the end of a connection when its task ends, however it ends:
/// returning, or dropped by the executor at shutdown (cancelled).
struct ConnectionLog<'a> {
    stats: &'a Stats,
    traffic: &'a Traffic,
    peer: SocketAddr,
    bytes: u64,
    ending: Option<Ending>,
}

impl Drop for ConnectionLog<'_> {
    fn drop(&mut self) {
        self.traffic.closed();
        let ending = self.ending.take().unwrap_or(Ending::Shutdown);
        self.stats.disconnected(self.peer, self.bytes, ending);
    }
}
