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
//! `handle_client` in [`echo`] is that function. The compiler turns it into a
//! state machine like the one we wrote by hand in the statemachine model:
//! each `.await` is a point where it can suspend, and the locals that live
//! across one (the buffer, the byte count) become fields of the future.
//! Polling the future is `resume`; `Poll::Pending` is the `yield`.
//!
//! The runtime has two halves, each a folder whose `mod.rs` is the part
//! to read first:
//! - [`reactor`]: the poller and the registrations. [`reactor::Async`]
//!   wraps a socket so that `read`, `write_all` and `accept` are futures;
//!   its `timers` file holds [`reactor::sleep`] and [`reactor::timeout`].
//!   The idle timeout is one of them, awaited like any I/O.
//! - [`executor`]: tasks, the ready queue, and `block_on`; its cooperative
//!   budget and tick bound are said in its doc.
//!
//! [`wake`] is the performance part a first reading can take on trust: a
//! waker that is two numbers, no allocation and no reference count, and
//! the inbox that takes wakes from other threads.
//!
//! This file adds the notes' `run_server`, [`accept_clients`], which
//! spawns a task per client; [`echo`] makes those tasks for the echo, and
//! the chat makes its own.
//!
//! Its limit is every single-threaded loop's: a task that computes for a
//! long time without awaiting stalls all the others. Shutdown: the accept
//! loop awaits the shutdown's bell (which a signal rings) beside the next
//! client, triggers the shutdown when it hears it and returns; dropping the
//! executor drops every client task, which closes its socket.
//!
//! Next: `completion`, one io_uring instead of readiness; then the tools
//! that measure the models side by side.
//!
//! Tutorial: `docs/tutorial/5-async-await-from-the-ground-up.md`.

pub mod echo;
pub mod executor;
pub mod reactor;
pub mod wake;

pub use echo::run;

use std::future::Future;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::pin::pin;
use std::rc::Rc;

use executor::{Either, Spawner, select};
use reactor::{Async, Reactor, sleep};

use super::Context;
use super::accept::{Accepted, Visit, sort};
use crate::lab::live::Traffic;
use crate::net::ACCEPT_BACKOFF;
use crate::stats::Ending;

/// The notes' `run_server`: accept clients and spawn the task `client`
/// makes for each, until the shutdown is triggered. (The chat spawns
/// another kind of client task.)
///
/// # Errors
/// If the listener breaks.
pub async fn accept_clients<'a, F: Future<Output = ()> + 'a>(
    listener: Async<TcpListener>,
    ctx: &'a Context,
    reactor: &Rc<Reactor>,
    traffic: &'a Traffic,
    spawner: Spawner<'a>,
    client: impl Fn(Async<TcpStream>, Visit<'a>) -> F,
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
        match sort(accepted, &ctx.stats) {
            Some(Accepted::Client(stream, peer)) => {
                let visit = Visit::new(peer, traffic, &ctx.stats);
                match Async::accepted(stream, reactor) {
                    Ok(stream) => spawner.spawn(client(stream, visit)),
                    Err(e) => visit.end(Ending::Failed(e)),
                }
            }
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
