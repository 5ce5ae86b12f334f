//! The readiness interface every event loop waits through, and its three
//! backends: Python's `selectors` module, in Rust.
//!
//! The notes teach with `selectors.DefaultSelector`, which picks the best
//! mechanism of the OS behind one interface: register a socket under a key
//! with the directions of interest, then wait for a batch of `(key,
//! readable, writable)`. [`Poller`] is that interface, and `serve --poller`
//! picks the mechanism:
//!
//! - [`Backend::Polling`], the default on every OS: the `polling` crate,
//!   which is epoll on Linux, kqueue on macOS and the BSDs, IOCP on Windows.
//!   Python's `DefaultSelector`. To be portable it arms a timer and re-arms
//!   its wake-up descriptor around a wait: a few more system calls than
//!   epoll alone (`docs/performance.md` measures what they cost).
//! - [`Backend::Epoll`] (Linux): our own epoll in one system call per wait
//!   ([`epoll`]), kept to show what the crate does underneath and what
//!   portability costs. Python's `EpollSelector`.
//! - [`Backend::Poll`]: `poll(2)` ([`poll`]), which hands the kernel the
//!   whole array of descriptors on every wait and scans it back: the design
//!   of the notes' `select.select()` loop (Python's `PollSelector` and
//!   `SelectSelector`), kept to show why epoll exists.
//! - [`Backend::Spin`]: no multiplexer at all, the notes' non-blocking loop
//!   before `select`: every socket asked in turn, and no wait ever sleeps
//!   ([`poll`]'s table, asked by hand). Here to show busy polling burn a
//!   core; not in [`Backend::ALL`], since nothing should serve with it.
//!
//! The rules, for every backend:
//! - [`Poller::add`] registers level-triggered: a socket is reported for
//!   as long as it is ready (the selector and the statemachine loop).
//!   [`Poller::add_edge_triggered`] registers both directions and reports
//!   each change to ready once (the async reactor, like mio): the caller
//!   remembers readiness until a call says `WouldBlock`, then calls
//!   [`Poller::rearm`] (free on epoll and `polling`, which track edges in
//!   the kernel; what re-enables the direction on `poll`, which does not).
//! - A source is deleted before it is closed. `add` is `unsafe` for that
//!   reason, as in the `polling` crate: a closed descriptor's number is
//!   soon reused, and its stale registration would report another socket.
//!   The loops never call it: they register through a type that keeps the
//!   rule ([`Registered`], [`Watchlist`], [`Watched`]), so that `unsafe`
//!   stays in this folder.
//! - Errors and hang-ups are reported as readable and writable, whatever
//!   the interest, so that whichever call comes next returns them.
//! - [`Poller::notify`] ends a wait from any thread.

#[cfg(target_os = "linux")]
pub mod epoll;
pub mod poll;
mod portable;
mod registered;
mod watchlist;

pub use registered::{Handle, Registered, Registration, Watched};
pub use watchlist::Watchlist;

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

/// Which readiness mechanism a loop waits with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The `polling` crate: epoll, kqueue or IOCP, whichever the OS has.
    #[default]
    Polling,
    /// Our own epoll, one system call per wait (Linux only).
    Epoll,
    /// poll(2): the whole descriptor array, every wait.
    Poll,
    /// No multiplexer: every socket asked in turn, never a sleep (wrong on
    /// purpose: busy polling).
    Spin,
}

impl Backend {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Polling => "polling",
            Backend::Epoll => "epoll",
            Backend::Poll => "poll",
            Backend::Spin => "spin",
        }
    }

    /// Every backend a server may serve with, the default first (not
    /// [`Backend::Spin`]).
    pub const ALL: [Backend; 3] = [Backend::Polling, Backend::Epoll, Backend::Poll];
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which readiness a socket is registered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Report the socket when it has data, EOF or a pending connection.
    pub read: bool,
    /// Report the socket when it has room to send.
    pub write: bool,
}

impl Interest {
    /// Registered, but reporting nothing: a socket parked on purpose.
    /// (Errors and hang-ups are still reported; see [`Event`].)
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };
    /// Waiting for data (or clients, on a listener).
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    /// Waiting for room to send.
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };
}

/// One ready socket, as a wait reports it.
///
/// An error or a hang-up is reported as both readable and writable whatever
/// the interest, so that whichever call the loop makes next returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The key the socket was registered under.
    pub key: usize,
    /// A read (or accept) will not block.
    pub readable: bool,
    /// A write will not block.
    pub writable: bool,
    /// The peer shut its side down, or the socket failed: from now on a
    /// read returns at once (end of stream or the error), however much was
    /// read since. Backends that [report it](Poller::reports_read_closed)
    /// set it for a half-close too; `polling` only for an error or a full
    /// hang-up. Edge-triggered callers may skip a read on its strength.
    pub read_closed: bool,
}

/// The events of one wait. Allocated once; a loop keeps one for its life.
#[derive(Default)]
pub struct Events {
    /// What the last wait reported, whichever backend it came from.
    list: Vec<Event>,
    /// The epoll backend's raw buffer.
    #[cfg(target_os = "linux")]
    epoll: epoll::Events,
    /// The `polling` backend's buffer, made at its first wait.
    portable: Option<::polling::Events>,
}

impl Events {
    /// An empty buffer.
    pub fn new() -> Events {
        Events::default()
    }

    /// The events of the last wait, in the order the OS gave them.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.list.iter().copied()
    }

    /// The `index`th event of the last wait, if there is one: for a loop
    /// whose handlers change the loop (the events included) as it goes.
    pub fn get(&self, index: usize) -> Option<Event> {
        self.list.get(index).copied()
    }
}

/// A readiness poller with the backend chosen when it was made.
#[derive(Debug)]
pub struct Poller {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Polling(portable::Poller),
    #[cfg(target_os = "linux")]
    Epoll(epoll::Poller),
    Poll(poll::Poller),
}

impl Poller {
    /// A poller with `backend`.
    ///
    /// # Errors
    /// The OS lacks the backend (epoll off Linux), or refuses its
    /// descriptors (out of descriptors, say).
    pub fn new(backend: Backend) -> io::Result<Poller> {
        let inner = match backend {
            Backend::Polling => Inner::Polling(portable::Poller::new()?),
            #[cfg(target_os = "linux")]
            Backend::Epoll => Inner::Epoll(epoll::Poller::new()?),
            #[cfg(not(target_os = "linux"))]
            Backend::Epoll => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "--poller epoll is Linux's; this system has polling (the default) and poll",
                ));
            }
            Backend::Poll => Inner::Poll(poll::Poller::new()?),
            Backend::Spin => Inner::Poll(poll::Poller::spinning()?),
        };
        Ok(Poller { inner })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Polling(_) => Backend::Polling,
            #[cfg(target_os = "linux")]
            Inner::Epoll(_) => Backend::Epoll,
            Inner::Poll(ref p) if p.spins() => Backend::Spin,
            Inner::Poll(_) => Backend::Poll,
        }
    }

    /// Watches `source` for `interest`, level-triggered, under `key` (any
    /// value but `usize::MAX`), for as long as the returned guard lives:
    /// the guard owns `source` (or a borrow of it) and deletes it from the
    /// poller when dropped, before the source can close. The safe way to
    /// register, as async-io's `Async<T>`: the rule [`Poller::add`] states
    /// is kept by the type.
    ///
    /// # Errors
    /// As [`Poller::add`].
    pub fn register<T: AsFd>(
        &self,
        source: T,
        key: usize,
        interest: Interest,
    ) -> io::Result<Registered<'_, T>> {
        Registration::new(self, source, key, interest)
    }

    /// Watches `source` for `interest`, level-triggered, reporting it under
    /// `key` (any value but `usize::MAX`). [`Poller::register`] is the
    /// safe way; this is for a source whose owner keeps the rule itself.
    ///
    /// # Safety
    /// `source` must be [deleted](Poller::delete) before it is closed.
    ///
    /// # Errors
    /// Already registered, out of memory, or a key of `usize::MAX`.
    pub unsafe fn add(&self, source: &impl AsFd, key: usize, interest: Interest) -> io::Result<()> {
        checked_key(key)?;
        match &self.inner {
            // SAFETY: the caller's promise.
            Inner::Polling(p) => unsafe { p.add(source, key, interest, false) },
            #[cfg(target_os = "linux")]
            Inner::Epoll(p) => p.add(source, key, interest),
            Inner::Poll(p) => p.add(source, key, interest, false),
        }
    }

    /// Watches `source` for reading and writing, edge-triggered, under
    /// `key`: each change to ready is reported once. The caller remembers
    /// readiness until a call says `WouldBlock`, then calls
    /// [`Poller::rearm`].
    ///
    /// # Safety
    /// As [`Poller::add`].
    ///
    /// # Errors
    /// As [`Poller::add`].
    pub unsafe fn add_edge_triggered(&self, source: &impl AsFd, key: usize) -> io::Result<()> {
        checked_key(key)?;
        let both = Interest {
            read: true,
            write: true,
        };
        match &self.inner {
            // SAFETY: the caller's promise.
            Inner::Polling(p) => unsafe { p.add(source, key, both, true) },
            #[cfg(target_os = "linux")]
            Inner::Epoll(p) => p.add_edge_triggered(source, key),
            Inner::Poll(p) => p.add(source, key, both, true),
        }
    }

    /// Changes what a level-triggered `source` is watched for.
    ///
    /// # Errors
    /// Not registered, say.
    pub fn modify(&self, source: &impl AsFd, key: usize, interest: Interest) -> io::Result<()> {
        match &self.inner {
            Inner::Polling(p) => p.modify(source, key, interest),
            #[cfg(target_os = "linux")]
            Inner::Epoll(p) => p.modify(source, key, interest),
            Inner::Poll(p) => p.modify(source, key, interest),
        }
    }

    /// Says that an edge-triggered `source` hit `WouldBlock` in the
    /// directions of `interest`: report them again at their next change.
    /// Nothing to do (no system call) where the kernel tracks edges.
    pub fn rearm(&self, source: &impl AsFd, interest: Interest) {
        if let Inner::Poll(p) = &self.inner {
            p.rearm(source, interest);
        }
    }

    /// Whether events carry [`Event::read_closed`]. `polling` does not
    /// register for it (no `EPOLLRDHUP`), so its callers must read until
    /// `WouldBlock` to see an end of stream.
    pub fn reports_read_closed(&self) -> bool {
        !matches!(self.inner, Inner::Polling(_))
    }

    /// Stops watching `source`.
    ///
    /// # Errors
    /// Not registered, say.
    pub fn delete(&self, source: &impl AsFd) -> io::Result<()> {
        match &self.inner {
            Inner::Polling(p) => p.delete(source),
            #[cfg(target_os = "linux")]
            Inner::Epoll(p) => p.delete(source),
            Inner::Poll(p) => p.delete(source),
        }
    }

    /// Blocks until a watched socket is ready, `timeout` passes (`None`:
    /// never) or [`Poller::notify`] is called, and fills `events` with the
    /// ready sockets. Returns how many; 0 after a timeout, a notification
    /// or a signal, so that the caller looks at its clock and flags again.
    ///
    /// # Errors
    /// As the backend's wait, except EINTR.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        events.list.clear();
        match &self.inner {
            Inner::Polling(p) => {
                let raw = events.portable.get_or_insert_with(::polling::Events::new);
                p.wait(raw, timeout, &mut events.list)?;
            }
            #[cfg(target_os = "linux")]
            Inner::Epoll(p) => {
                p.wait(&mut events.epoll, timeout)?;
                events.list.extend(events.epoll.iter());
            }
            Inner::Poll(p) => p.wait(&mut events.list, timeout)?,
        }
        Ok(events.list.len())
    }

    /// Makes the current wait return at once, or the next one if no thread
    /// waits now. Any thread may call it.
    ///
    /// # Errors
    /// As the backend's wake-up write (never in practice).
    pub fn notify(&self) -> io::Result<()> {
        match &self.inner {
            Inner::Polling(p) => p.notify(),
            #[cfg(target_os = "linux")]
            Inner::Epoll(p) => p.notify(),
            Inner::Poll(p) => p.notify(),
        }
    }
}

/// `usize::MAX` is every backend's own wake-up key.
fn checked_key(key: usize) -> io::Result<()> {
    if key == usize::MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the largest key is the poller's own",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Instant;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    fn wait_for(poller: &Poller, timeout: Duration) -> Vec<Event> {
        let mut events = Events::new();
        poller.wait(&mut events, Some(timeout)).unwrap();
        events.iter().collect()
    }

    const SOON: Duration = Duration::from_secs(5);
    const NOT_YET: Duration = Duration::from_millis(50);

    /// Level-triggered, on every backend: reported under its key for as
    /// long as it is ready, silent once read.
    #[test]
    fn level_triggered_reports_until_read() {
        for backend in Backend::ALL {
            let poller = Poller::new(backend).unwrap();
            let (mut client, mut server) = pair();
            // SAFETY: deleted before the end of the test.
            unsafe { poller.add(&server, 7, Interest::READ) }.unwrap();
            assert!(wait_for(&poller, NOT_YET).is_empty(), "{backend}");
            client.write_all(b"hi").unwrap();
            for _ in 0..2 {
                let events = wait_for(&poller, SOON);
                assert_eq!(events.len(), 1, "{backend}");
                assert_eq!((events[0].key, events[0].readable), (7, true), "{backend}");
            }
            server.read_exact(&mut [0; 2]).unwrap();
            assert!(wait_for(&poller, NOT_YET).is_empty(), "{backend}");
            poller.modify(&server, 7, Interest::WRITE).unwrap();
            assert!(wait_for(&poller, SOON)[0].writable, "{backend}");
            poller.delete(&server).unwrap();
            assert!(wait_for(&poller, NOT_YET).is_empty(), "{backend}");
        }
    }

    /// Edge-triggered, on every backend: a change is reported once, and
    /// again after `rearm` once new data comes.
    #[test]
    fn edge_triggered_reports_each_change_once() {
        for backend in Backend::ALL {
            let poller = Poller::new(backend).unwrap();
            let (mut client, mut server) = pair();
            // SAFETY: deleted before the end of the test.
            unsafe { poller.add_edge_triggered(&server, 3) }.unwrap();
            // Writable at once: one edge, then silence.
            let first = wait_for(&poller, SOON);
            assert!(first.iter().all(|e| e.key == 3), "{backend}");
            client.write_all(b"one").unwrap();
            let events = wait_for(&poller, SOON);
            assert!(events.iter().any(|e| e.readable), "{backend}: {events:?}");
            assert!(wait_for(&poller, NOT_YET).is_empty(), "{backend}");
            // Read to WouldBlock, rearm, then new data is a new edge.
            let mut buffer = [0; 16];
            assert_eq!(server.read(&mut buffer).unwrap(), 3);
            assert!(server.read(&mut buffer).is_err());
            poller.rearm(&server, Interest::READ);
            client.write_all(b"two").unwrap();
            let events = wait_for(&poller, SOON);
            assert!(events.iter().any(|e| e.readable), "{backend}: {events:?}");
            poller.delete(&server).unwrap();
        }
    }

    /// A hang-up is reported even with no interest, on every backend.
    #[test]
    fn a_hang_up_is_reported_with_no_interest() {
        for backend in Backend::ALL {
            let poller = Poller::new(backend).unwrap();
            let (client, server) = pair();
            // SAFETY: deleted before the end of the test.
            unsafe { poller.add(&server, 1, Interest::NONE) }.unwrap();
            assert!(wait_for(&poller, NOT_YET).is_empty(), "{backend}");
            socket2::SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(client);
            let events = wait_for(&poller, SOON);
            assert!(
                events
                    .iter()
                    .any(|e| e.key == 1 && e.readable && e.writable),
                "{backend}: {events:?}"
            );
            poller.delete(&server).unwrap();
        }
    }

    /// A watchlist adds an item the first time it is watched, and deletes
    /// it before handing it back: the socket it returns, still open and
    /// readable, is reported no more.
    #[test]
    fn a_watchlist_deletes_before_it_hands_back() {
        for backend in Backend::ALL {
            let mut list = Watchlist::new(Arc::new(Poller::new(backend).unwrap()));
            let (mut client, server) = pair();
            let key = list.insert(server);
            client.write_all(b"x").unwrap();
            assert!(wait_for(list.poller(), NOT_YET).is_empty(), "{backend}");
            list.watch(key, Interest::READ).unwrap();
            list.watch(key, Interest::READ).unwrap();
            assert_eq!(list.watching(key), Some(Interest::READ));
            let events = wait_for(list.poller(), SOON);
            assert!(events.iter().any(|e| e.key == key), "{backend}");
            let server = list.remove(key);
            assert!(wait_for(list.poller(), NOT_YET).is_empty(), "{backend}");
            drop(server);
        }
    }

    /// `notify` ends a wait from another thread, on every backend, and is
    /// never reported as an event.
    #[test]
    fn notify_ends_a_wait_from_another_thread() {
        for backend in Backend::ALL {
            let poller = Arc::new(Poller::new(backend).unwrap());
            let other = poller.clone();
            let started = Instant::now();
            let ringer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                other.notify().unwrap();
            });
            let mut events = Events::new();
            assert_eq!(poller.wait(&mut events, Some(SOON)).unwrap(), 0);
            assert!(started.elapsed() < SOON, "{backend}");
            ringer.join().unwrap();
            // Rung once, heard once.
            assert_eq!(poller.wait(&mut events, Some(NOT_YET)).unwrap(), 0);
        }
    }

    /// A timeout is never cut short, and the wake-up key is refused.
    #[test]
    fn timeouts_and_keys() {
        for backend in Backend::ALL {
            let poller = Poller::new(backend).unwrap();
            let started = Instant::now();
            wait_for(&poller, Duration::from_millis(30));
            assert!(started.elapsed() >= Duration::from_millis(30), "{backend}");
            let (_client, server) = pair();
            // SAFETY: refused, so never registered.
            let refused = unsafe { poller.add(&server, usize::MAX, Interest::READ) };
            assert!(refused.is_err(), "{backend}");
        }
    }
}
