//! The chat on the statemachine loop: each client a hand-written
//! coroutine, all of them sharing the loop's [`Room`].
//!
//! Two things are new next to the echo task. A chat task listens and is
//! owed lines at the same time, so it may yield [`Wait::ReadOrWrite`]. And
//! a task now changes what *another* task holds: a `chat` line puts bytes
//! in the receiver's outbox, and the receiver, suspended on its socket,
//! must be told. [`Step::wake`] is that: the sender names the receiver's
//! key, the loop queues it with [`Resume::Woken`], and the receiver writes
//! its outbox when it runs. In the notes' generators this is the moment
//! the chat needs a way to reach another coroutine; asyncio answers it with
//! a `StreamWriter` per client, which is an outbox and a waker.
//!
//! The room is in a `RefCell` because every task holds a reference to it;
//! a task borrows it only inside `resume`, never across a yield, and one
//! task runs at a time, so a borrow never meets another.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use super::CLOSE_GRACE;
use super::room::{After, Room};
use crate::lab::live::{Line, Traffic};
use crate::net::{interrupted, would_block, write_some};
use crate::serve::Context;
use crate::serve::accept::Visit;
use crate::serve::buffers::BufferPool;
use crate::serve::statemachine::{self, Coroutine, Resume, Step, Wait};
use crate::stats::Ending;

/// Serves the chat from this thread until shutdown.
///
/// # Errors
/// If the poller fails or the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let room = RefCell::new(Room::default());
    let buffers = BufferPool::new();
    let traffic = Traffic::default();
    let fatal = Cell::new(None);
    let more = |line: &mut Line| room.borrow().fill(line);
    statemachine::serve(&listener, ctx, &traffic, more, &fatal, |stream, visit| {
        Box::new(Chatter {
            stream,
            room: &room,
            buffers: &buffers,
            traffic: &traffic,
            member: None,
            stopped: None,
            visit,
        })
    })
}

/// One client's coroutine.
struct Chatter<'a> {
    stream: TcpStream,
    room: &'a RefCell<Room<usize>>,
    /// A read borrows a buffer only until its lines are carried out.
    buffers: &'a BufferPool,
    /// The loop's `--stats` traffic.
    traffic: &'a Traffic,
    /// Its key in the room, from its first resume on (the room's handle
    /// for it is its task key, for `wake`).
    member: Option<usize>,
    /// Why it stopped sending, once it did, and until when it may take
    /// what it is owed.
    stopped: Option<(After, Instant)>,
    /// Who it is, the bytes written to it, and how it ended: logged when
    /// the task is dropped (by the loop at shutdown, if it had not ended).
    visit: Visit<'a>,
}

impl<'a> Coroutine<'a> for Chatter<'a> {
    fn resume(&mut self, how: Resume, step: &mut Step<'_, 'a>) -> Wait {
        let mut room = self.room.borrow_mut();
        let member = *self.member.get_or_insert_with(|| room.join(step.me()));
        if let (Resume::TimedOut, Some((after, _))) = (how, self.stopped) {
            // Only the close grace has a deadline.
            return self.finish(after.out_of_time());
        }
        // Woken by a sender, nothing is to be read: skip the read.
        if self.stopped.is_none() && how == Resume::Ready {
            let mut data = self.buffers.lend();
            let after = match self.stream.read(&mut data) {
                Ok(0) => {
                    room.leave(member);
                    After::Quit
                }
                Ok(n) => {
                    self.traffic.read(n);
                    room.receive(member, &data[..n])
                }
                Err(e) if would_block(&e) || interrupted(&e) => After::Continue,
                Err(e) => return self.finish(Ending::Failed(e)),
            };
            if after != After::Continue {
                self.stopped = Some((after, Instant::now() + CLOSE_GRACE));
            }
        }
        // Tell every receiver of what was just posted; this task among
        // them writes its own below.
        room.take_woken(|_, other| step.wake(other.handle));
        let outbox = &mut room.member(member).outbox;
        if !outbox.is_empty() {
            match write_some(&mut self.stream, outbox.pending()) {
                Ok(n) => {
                    outbox.consume(n);
                    self.traffic.wrote(n);
                    self.visit.bytes += n as u64;
                }
                Err(e) => return self.finish(Ending::Failed(e)),
            }
        }
        let (too_slow, owed) = (outbox.is_too_slow(), !outbox.is_empty());
        drop(room);
        if too_slow && self.stopped.is_none() {
            // Cut off: its last bytes get the close grace, as after a quit.
            self.stopped = Some((After::TooSlow, Instant::now() + CLOSE_GRACE));
        }
        match self.stopped {
            Some((after, _)) if !owed => self.finish(after.ending()),
            Some((_, until)) => Wait::Write { until: Some(until) },
            None if owed => Wait::ReadOrWrite { until: None },
            None => Wait::Read { until: None },
        }
    }

    fn source(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Chatter<'_> {
    fn finish(&mut self, ending: Ending) -> Wait {
        self.visit.ends(ending);
        Wait::Done
    }
}

impl Drop for Chatter<'_> {
    fn drop(&mut self) {
        if let Some(member) = self.member {
            // Its name is free, its outbox gone. Then its socket closes,
            // and its visit is counted out and logged.
            self.room.borrow_mut().remove(member);
        }
    }
}
