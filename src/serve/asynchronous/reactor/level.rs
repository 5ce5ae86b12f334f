//! Level-triggered registrations: the reactor's way on a backend that
//! cannot report a half-close with the data (`polling`, which does not ask
//! for `EPOLLRDHUP`). Edge-triggered there, a task whose read came back
//! short could not tell whether the peer's FIN had arrived with the data,
//! and would have to read until `WouldBlock`: one more `read` per message.
//! Level-triggered, the next wait reports the socket again while anything
//! (data or the FIN) is unread, so a short read may forget readiness at
//! once.
//!
//! The price of level: a socket is reported at every wait while it is
//! ready, wanted or not. So it is watched only in the directions a task
//! will act on, as the selector's `settle` keeps its interest:
//! - read, from its registration on; dropped when a wait that could have
//!   slept reports it readable and no task waits to read (a task asleep on
//!   a timer, or waiting for room to write: the wait would return at once
//!   for it, again and again), and watched again when a read says
//!   `WouldBlock`. A wait that only looks (tasks are queued to run) keeps
//!   it: the sockets it reports again are mostly those of tasks woken and
//!   not yet run, which will read them;
//! - write, only while a task waits for room (a socket almost always has
//!   room, and would be reported at every wait).
//!
//! In steady ping-pong neither changes: a message costs one `read`, one
//! `write`, and no `epoll_ctl`; what level costs more than edges there is
//! the kernel's look, at the next wait, at every socket it reported (about
//! 1% of a message, `docs/performance.md`: "The last two per cent"). An error or a hang-up is reported whatever
//! the interest; the socket's reads and writes never block again, so the
//! reactor deletes it from the poller (`Drop for Async` then deletes
//! nothing, and says nothing of it).

use super::{Direction, Event, Interest, READ_CLOSED, Reactor, Source, WATCH_READ, WATCH_WRITE};

impl Reactor {
    /// After `event` woke whom it could (`woke_reader`: a task waited to
    /// read), stops watching what nobody waits for.
    pub(super) fn settle_level(&self, source: &Source, event: &Event, woke_reader: bool) {
        if event.read_closed {
            // Reported at every wait whatever it is watched for: stop
            // watching it (its operations no longer block).
            let _ = self.poller.delete_handle(&source.watched);
            source.mark(WATCH_READ | WATCH_WRITE, false);
            return;
        }
        let mut watched = source.watching();
        if event.readable && !woke_reader && self.could_sleep.get() {
            watched.read = false;
        }
        if event.writable {
            watched.write = false;
        }
        self.watch(source, event.key, watched);
    }

    /// A task found the socket not ready in `direction` and waits for it:
    /// watch that direction (again).
    pub(super) fn watch_again(&self, source: &Source, key: usize, direction: Direction) {
        let mut watched = source.watching();
        match direction {
            Direction::Read => watched.read = true,
            Direction::Write => watched.write = true,
        }
        self.watch(source, key, watched);
    }

    /// Watches `source` for `interest`, if it is not already. A failure
    /// leaves it as it was: the kernel is out of memory, or the socket
    /// failed and is reported anyway.
    fn watch(&self, source: &Source, key: usize, interest: Interest) {
        // A socket that failed or hung up is watched no more.
        if source.watching() == interest || source.is(READ_CLOSED) {
            return;
        }
        if self
            .poller
            .modify_handle(&source.watched, key, interest)
            .is_ok()
        {
            source.mark(WATCH_READ, interest.read);
            source.mark(WATCH_WRITE, interest.write);
        }
    }
}

impl Source {
    /// What the poller watches it for now (level-triggered).
    fn watching(&self) -> Interest {
        Interest {
            read: self.is(WATCH_READ),
            write: self.is(WATCH_WRITE),
        }
    }
}
