//! The chat on our async executor: a task per client, all sharing the
//! loop's [`Room`] by reference.
//!
//! The notes' asyncio chat, with its gaps closed. Each client task does two
//! things at once, with [`select`]: it listens (read, carry out the lines)
//! and it speaks (write its outbox as the socket takes it). Speaking
//! waits on two things: a line to write, and room in the socket. The
//! first is a [`Waker`] the task leaves in its room member when its outbox
//! is empty; a sender that posts to it wakes it. That pair, an outbox and a
//! waker, is what asyncio's `StreamWriter` is.
//!
//! Listening and speaking are both cancel-safe, which `select` needs: a
//! read's bytes are carried out before the next `.await`, and written bytes
//! leave the outbox as the socket takes them, so dropping either future
//! loses nothing. The room sits in a `RefCell`, borrowed only between two
//! `.await`s.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use super::CLOSE_GRACE;
use super::room::{After, Room};
use crate::lab::live::Traffic;
use crate::lab::meter::Meter;
use crate::serve::Context;
use crate::serve::accept::Visit;
use crate::serve::asynchronous::accept_clients;
use crate::serve::asynchronous::executor::{Either, Executor, select};
use crate::serve::asynchronous::reactor::{Async, Reactor, TimedOut, sleep, timeout};
use crate::stats::Ending;

/// The room of an async loop: a member's handle is the waker of its task
/// while it waits for lines to write.
type AsyncRoom = RefCell<Room<Option<Waker>>>;

/// Serves the chat from this thread until shutdown.
///
/// # Errors
/// If the poller fails or the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let traffic = Traffic::default();
    let room = AsyncRoom::default();
    let reactor = Reactor::new(ctx.config.poller)?;
    reactor.trace().set_on(ctx.config.trace);
    reactor.set_budget(ctx.config.budget);
    let executor =
        Executor::new(reactor.clone()).metered(Meter::new(ctx, "async"), &traffic, |line| {
            room.borrow().fill(line)
        });
    let listener = Async::new(listener, &reactor)?;
    let accepting = accept_clients(
        listener,
        ctx,
        &reactor,
        &traffic,
        executor.spawner(),
        |stream, visit| {
            let racy = ctx.config.racy_register;
            chatter(stream, visit, &room, &reactor, &traffic, racy)
        },
    );
    let served = executor.block_on(accepting);
    executor.cancel_all();
    executor.report(std::time::Instant::now(), true);
    drop(executor);
    served?
}

/// One client's task.
async fn chatter(
    stream: Async<TcpStream>,
    visit: Visit<'_>,
    room: &AsyncRoom,
    reactor: &Rc<Reactor>,
    traffic: &Traffic,
    racy: Option<Duration>,
) {
    let mut member = Member {
        key: room.borrow_mut().join(None),
        room,
        traffic,
        racy,
        visit: RefCell::new(visit),
    };
    let ending = member.talk(&stream, reactor).await;
    member.visit.get_mut().ends(ending);
    // The socket closes before the member leaves and its end is logged.
    drop(stream);
}

/// A client task's place in the room. Dropping it (the task ended, or
/// was cancelled at shutdown) frees the name, then its visit logs the end.
struct Member<'a> {
    key: usize,
    room: &'a AsyncRoom,
    /// The loop's `--stats` traffic.
    traffic: &'a Traffic,
    /// `--racy-register`: how long to await between checking a name and
    /// taking it (wrong on purpose).
    racy: Option<Duration>,
    /// Who it is, the bytes written to it, how it ended (speaking and
    /// listening share the member, so the count is behind a `RefCell`).
    visit: RefCell<Visit<'a>>,
}

impl Member<'_> {
    /// Listens and speaks until the client stops sending, then gives it
    /// the close grace to take what it is owed.
    async fn talk(&self, stream: &Async<TcpStream>, reactor: &Rc<Reactor>) -> Ending {
        // Speaking is polled first: each time the task runs it writes what
        // it owes before it reads more, and the cooperative budget then
        // bounds how much it reads. (The other way round, a client that
        // sends without pause spends the whole budget on reading, and its
        // replies pile up until it is cut off as too slow.)
        let speaking = poll_fn(|cx| self.poll_speak(stream, cx, false));
        let stopped = match select(speaking, self.listen(stream, reactor)).await {
            Either::Right(Ok(after)) => after,
            Either::Left(Err(e)) | Either::Right(Err(e)) => return Ending::Failed(e),
            // Cut off: its last bytes get the close grace, as after a quit.
            Either::Left(Ok(())) => After::TooSlow,
        };
        let rest = poll_fn(|cx| self.poll_speak(stream, cx, true));
        match timeout(reactor, Some(CLOSE_GRACE), std::pin::pin!(rest)).await {
            Err(TimedOut) => stopped.out_of_time(),
            Ok(Err(e)) => Ending::Failed(e),
            Ok(Ok(())) => stopped.ending(),
        }
    }

    /// Reads and carries out lines until `quit`, the end of the stream, or
    /// expulsion; wakes every member posted to.
    async fn listen(&self, stream: &Async<TcpStream>, reactor: &Rc<Reactor>) -> io::Result<After> {
        loop {
            let data = stream.recv().await?;
            if let Some(delay) = self.racy {
                let asked = self.room.borrow().free_name_asked(self.key, &data);
                if let Some(name) = asked {
                    // --racy-register, wrong on purpose: an await between
                    // "is the name free?" and "take it". One thread, no
                    // lock anywhere, and every task that checked meanwhile
                    // takes the name too.
                    self.traffic.read(data.len());
                    sleep(reactor, delay).await;
                    let mut room = self.room.borrow_mut();
                    room.take_name(self.key, name);
                    wake_posted(&mut room);
                    continue;
                }
            }
            let mut room = self.room.borrow_mut();
            let after = if data.is_empty() {
                room.leave(self.key);
                After::Quit
            } else {
                self.traffic.read(data.len());
                room.receive(self.key, &data)
            };
            wake_posted(&mut room);
            if after != After::Continue {
                return Ok(after);
            }
        }
    }

    /// Writes the outbox as far as the socket takes it. Pending while the
    /// socket is full, and while the outbox is empty unless `until_empty`.
    /// Ready at once, while listening, when the outbox is cut off as too
    /// slow: the listening is over.
    fn poll_speak(
        &self,
        stream: &Async<TcpStream>,
        cx: &mut TaskContext<'_>,
        until_empty: bool,
    ) -> Poll<io::Result<()>> {
        let mut room = self.room.borrow_mut();
        let member = room.member(self.key);
        // A sender that posts (or cuts the outbox off) wakes this waker.
        if !member
            .handle
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            member.handle = Some(cx.waker().clone());
        }
        let outbox = &mut member.outbox;
        if outbox.is_too_slow() && !until_empty {
            return Poll::Ready(Ok(()));
        }
        while !outbox.is_empty() {
            match stream.poll_write(cx, outbox.pending()) {
                Poll::Ready(Ok(n)) => {
                    outbox.consume(n);
                    self.traffic.wrote(n);
                    self.visit.borrow_mut().bytes += n as u64;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if until_empty {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// Wakes every member posted to since the last call.
fn wake_posted(room: &mut Room<Option<Waker>>) {
    room.take_woken(|_, member| {
        if let Some(waker) = member.handle.take() {
            waker.wake();
        }
    });
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        self.room.borrow_mut().remove(self.key);
    }
}
