//! Registrations that keep the poller's one rule themselves: a source is
//! deleted before it is closed. Every loop registers through one of these,
//! so the `unsafe` of adding a descriptor stays in this folder:
//!
//! - [`Registration`]: one source, watched for as long as the guard lives
//!   (async-io's `Async<T>`). The selectors hold a borrow of their poller
//!   ([`Registered`]); the async reactor's sockets hold the reactor itself
//!   (an `Rc`).
//! - [`Handle`]: a registered descriptor named without the socket at hand,
//!   for a table that keeps it beside its key (the async reactor's).
//! - [`Watched`]: the same guard on a bare `polling::Poller`, which the
//!   notes' steps use as Python uses `selectors`.
//!
//! The statemachine's table registers lazily instead: see
//! [`super::Watchlist`].

use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::{Interest, Poller};

/// A source registered with a [`Poller`] it borrows: the selectors' kind.
pub type Registered<'p, T> = Registration<T, &'p Poller>;

/// A source registered with a [`Poller`]: watched for exactly as long as
/// this guard lives. Dropping the guard deletes the source from the poller
/// and only then drops the source, so a registration can never outlive its
/// socket, whatever path a loop takes to close it (an error, a timeout,
/// shutdown).
///
/// `P` is how the guard reaches its poller: `&Poller`, or a pointer to
/// whatever owns one (the reactor's `Rc<Reactor>`).
pub struct Registration<T: AsFd, P: Deref<Target: AsRef<Poller>>> {
    poller: P,
    /// The watched source (a socket, or a borrow of one).
    source: T,
    /// Its events' key. (A `u32` packs beside a socket's descriptor.)
    key: u32,
}

impl<T: AsFd, P: Deref<Target: AsRef<Poller>>> Registration<T, P> {
    /// Watches `source` for `interest`, level-triggered, under `key`.
    ///
    /// # Errors
    /// As [`Poller::add`]; a key past `u32::MAX`.
    pub fn new(poller: P, source: T, key: usize, interest: Interest) -> io::Result<Self> {
        let key32 = small(key)?;
        // SAFETY: the guard owns `source` and deletes it in `drop`, which
        // runs before its fields (the source among them) are dropped.
        unsafe { (*poller).as_ref().add(&source, key, interest)? };
        Ok(Registration {
            poller,
            source,
            key: key32,
        })
    }

    /// Watches `source` for reading and writing, edge-triggered, under
    /// `key`: see [`Poller::add_edge_triggered`].
    ///
    /// # Errors
    /// As [`Registration::new`].
    pub fn edge_triggered(poller: P, source: T, key: usize) -> io::Result<Self> {
        let key32 = small(key)?;
        // SAFETY: as in `new`.
        unsafe { (*poller).as_ref().add_edge_triggered(&source, key)? };
        Ok(Registration {
            poller,
            source,
            key: key32,
        })
    }

    /// The key its events carry.
    pub fn key(&self) -> usize {
        self.key as usize
    }

    /// What it reaches its poller through.
    pub fn owner(&self) -> &P {
        &self.poller
    }

    /// Changes what it is watched for.
    ///
    /// # Errors
    /// As [`Poller::modify`].
    pub fn modify(&self, interest: Interest) -> io::Result<()> {
        let poller = (*self.poller).as_ref();
        poller.modify(&self.source, self.key(), interest)
    }

    /// A handle to change or delete this registration later without the
    /// source at hand. Its owner drops it with this guard (the reactor
    /// removes the table entry that holds it in `Async`'s `drop`).
    pub fn handle(&self) -> Handle {
        let fd = self.source.as_fd().as_raw_fd();
        // SAFETY: the descriptor is open now, and a handle is used only
        // while its registration lives (its owner's promise, above), so
        // while the source is open: the `'static` is that promise. Were one
        // kept too long, its number would name a closed or reused
        // descriptor for one `epoll_ctl`: the kernel refuses it, or changes
        // another registration of this poller; no backend keeps a pointer
        // by descriptor, so nothing reads freed memory.
        Handle(unsafe { BorrowedFd::borrow_raw(fd) })
    }
}

impl<T: AsFd, P: Deref<Target: AsRef<Poller>>> Deref for Registration<T, P> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.source
    }
}

impl<T: AsFd, P: Deref<Target: AsRef<Poller>>> DerefMut for Registration<T, P> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.source
    }
}

impl<T: AsFd, P: Deref<Target: AsRef<Poller>>> AsFd for Registration<T, P> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.source.as_fd()
    }
}

impl<T: AsFd, P: Deref<Target: AsRef<Poller>>> Drop for Registration<T, P> {
    fn drop(&mut self) {
        // Before `source` closes: that is the rule this type keeps.
        let _ = (*self.poller).as_ref().delete(&self.source);
    }
}

impl AsRef<Poller> for Poller {
    fn as_ref(&self) -> &Poller {
        self
    }
}

fn small(key: usize) -> io::Result<u32> {
    u32::try_from(key).map_err(|_| io::Error::other("too many sockets for one poller"))
}

/// A registered descriptor, named without its socket: made by
/// [`Registration::handle`], used through [`Poller::modify_handle`] and
/// [`Poller::delete_handle`]. Four bytes, with a value no descriptor has
/// (-1) free for a table's own use: the reactor's slab keeps its entries
/// at 40 bytes with it.
#[derive(Debug)]
pub struct Handle(BorrowedFd<'static>);

impl Poller {
    /// [`Poller::modify`] through a [`Handle`].
    ///
    /// # Errors
    /// As [`Poller::modify`].
    pub fn modify_handle(&self, handle: &Handle, key: usize, interest: Interest) -> io::Result<()> {
        self.modify(&handle.borrow(), key, interest)
    }

    /// [`Poller::delete`] through a [`Handle`].
    ///
    /// # Errors
    /// As [`Poller::delete`].
    pub fn delete_handle(&self, handle: &Handle) -> io::Result<()> {
        self.delete(&handle.borrow())
    }
}

impl Handle {
    /// The descriptor, for one call.
    fn borrow(&self) -> BorrowedFd<'_> {
        self.0
    }
}

/// A socket watched by a bare `polling::Poller` for as long as this lives:
/// `sel.register(...)` that cannot outlive its `sel.unregister(...)`. The
/// notes' steps use it, as the notes use `selectors`.
pub struct Watched<'p, T: AsFd> {
    poller: &'p polling::Poller,
    /// The socket.
    pub source: T,
}

impl<'p, T: AsFd> Watched<'p, T> {
    /// Registers `source`, level-triggered (`selectors`' kind: reported at
    /// every wait while ready; the crate's default is oneshot), for
    /// `interest` (`polling::Event::readable(key)` and the like).
    ///
    /// # Errors
    /// The poller refuses it.
    pub fn new(
        poller: &'p polling::Poller,
        source: T,
        interest: polling::Event,
    ) -> io::Result<Self> {
        // SAFETY: `Drop` deletes the source from the poller before the
        // source itself is dropped (a field is dropped after `drop` runs).
        unsafe { poller.add_with_mode(&source.as_fd(), interest, polling::PollMode::Level)? };
        Ok(Watched { poller, source })
    }

    /// Watches it for `interest` from now on.
    ///
    /// # Errors
    /// The poller refuses it.
    pub fn change(&self, interest: polling::Event) -> io::Result<()> {
        let level = polling::PollMode::Level;
        self.poller
            .modify_with_mode(self.source.as_fd(), interest, level)
    }
}

impl<T: AsFd> Drop for Watched<'_, T> {
    fn drop(&mut self) {
        let _ = self.poller.delete(self.source.as_fd());
    }
}
