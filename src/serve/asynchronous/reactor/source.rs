//! One registered socket in the reactor's table: what is known of its
//! readiness, and which tasks wait for it.

use std::cell::Cell;
use std::task::Waker;

use crate::poller::Handle;

/// One registered socket: what is known of its readiness, and who waits.
/// Its key in the reactor's slab is its key in the poller too.
pub(super) struct Source {
    /// What is known of it, as the bits below, in one byte: every idle
    /// connection holds a `Source`, 40 bytes with the flags packed.
    pub(super) known: Cell<u8>,
    /// Its registration, for level-triggered ones to change what the
    /// poller watches from [`Reactor::dispatch`] (see `level.rs`).
    pub(super) watched: Handle,
    /// The task waiting to read (one at a time).
    pub(super) reader: Waiter,
    /// The task waiting to write (one at a time).
    pub(super) writer: Waiter,
}

/// Readiness, remembered: set by an event, cleared only when an operation
/// hits `WouldBlock` (or, for reads, comes back short). While it is set the
/// operation is tried without waiting; while it is clear, a task waits.
pub(super) const READABLE: u8 = 1;
/// As [`READABLE`], for writing.
pub(super) const WRITABLE: u8 = 1 << 1;
/// The peer hung up (or the socket failed): reads never block again.
pub(super) const READ_CLOSED: u8 = 1 << 2;
/// Level-triggered only: what the poller watches it for now.
pub(super) const WATCH_READ: u8 = 1 << 3;
/// As [`WATCH_READ`], for writing.
pub(super) const WATCH_WRITE: u8 = 1 << 4;

/// Who waits for one direction of a socket: the waker of the task waiting
/// right now, if one is. A `Cell`, not a `RefCell`: taken out and put
/// back, it needs no borrow flag, 8 bytes less in every socket's
/// registration. (Our wakers cost nothing to clone and drop; a runtime
/// whose wakers count references would rather keep one here between
/// waits.)
#[derive(Default)]
pub(super) struct Waiter {
    waker: Cell<Option<Waker>>,
}

impl Waiter {
    /// Leaves `waker` to be woken at the next readiness.
    pub(super) fn wait(&self, waker: &Waker) {
        let kept = match self.waker.take() {
            Some(kept) if kept.will_wake(waker) => kept,
            _ => waker.clone(),
        };
        self.waker.set(Some(kept));
    }

    /// Wakes the waiting task, if any; returns whether there was one.
    pub(super) fn wake(&self) -> bool {
        match self.waker.take() {
            Some(waker) => {
                waker.wake();
                true
            }
            None => false,
        }
    }
}

/// Which half of a socket an operation needs.
#[derive(Clone, Copy)]
pub(super) enum Direction {
    Read,
    Write,
}

impl Direction {
    /// Its bit of readiness in [`Source::known`].
    pub(super) fn ready(self) -> u8 {
        match self {
            Direction::Read => READABLE,
            Direction::Write => WRITABLE,
        }
    }
}

impl Source {
    /// Whether `bit` of [`Source::known`] is set.
    pub(super) fn is(&self, bit: u8) -> bool {
        self.known.get() & bit != 0
    }

    /// Sets or clears `bit` of [`Source::known`].
    pub(super) fn mark(&self, bit: u8, on: bool) {
        let known = self.known.get();
        self.known.set(if on { known | bit } else { known & !bit });
    }

    pub(super) fn waiter(&self, direction: Direction) -> &Waiter {
        match direction {
            Direction::Read => &self.reader,
            Direction::Write => &self.writer,
        }
    }

    /// Whether the socket is known to be ready in `direction`; if not,
    /// leaves `waker` to be woken when it is.
    pub(super) fn ready_or_wait(&self, direction: Direction, waker: &Waker) -> bool {
        let ready = self.is(direction.ready());
        if !ready {
            self.waiter(direction).wait(waker);
        }
        ready
    }

    /// Marks `direction` ready and wakes whoever waits for it; returns
    /// whether a task waited.
    pub(super) fn wake(&self, direction: Direction) -> bool {
        self.mark(direction.ready(), true);
        self.waiter(direction).wake()
    }
}
