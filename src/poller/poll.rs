//! The `poll(2)` backend: the design of the notes' `select.select()` loop.
//!
//! poll keeps nothing in the kernel between two waits. Every wait builds an
//! array of `pollfd` from our table of registrations, one per socket, hands
//! the whole array to the kernel, which checks every descriptor in it, and
//! scans the whole array back for the few that are ready. The cost grows
//! with the sockets *registered*; epoll's grows with the sockets *ready*.
//! With 5,000 idle clients and 10 busy ones, each wait here walks 5,010
//! entries twice to find 10: that is why epoll and kqueue exist
//! (`echo-lab bench --idle` measures it).
//!
//! poll is level-triggered. Edge-triggered registrations are emulated: once
//! a direction is reported it is left out of the array until the caller
//! says, with [`Poller::rearm`], that it hit `WouldBlock`; an error or a
//! hang-up, which poll reports whatever is asked, leaves the whole
//! descriptor out (a negative fd) until then. The table is behind a mutex
//! only so that the poller can be shared with threads that `notify` it;
//! those never take the lock.
//!
//! **Spinning** (`--poller spin`, [`Poller::spinning`]) is the same table
//! with no multiplexer at all: the notes' loop before `select`, non-blocking
//! sockets asked in turn, over and over. Each wait asks every registered
//! socket itself (a `recv` with `MSG_PEEK` for data, `accept` or `write`
//! left to say `WouldBlock`) and returns at once, whether anything was
//! ready or not. Nothing ever sleeps: with no client at all the loop burns
//! a whole core, and with many idle ones it asks each of them every turn.
//! It is here to be measured, never to serve.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{Event, Interest};

/// One registered descriptor.
#[derive(Debug)]
struct Registration {
    fd: RawFd,
    key: usize,
    interest: Interest,
    /// Emulated edge-triggered: report each direction once until rearmed.
    edge: bool,
    /// The directions still reported (all of `interest`, for level).
    armed: Interest,
    /// An error or hang-up was reported (edge only): left out until rearmed.
    muted: bool,
}

#[derive(Debug, Default)]
struct Table {
    registrations: Vec<Registration>,
    /// Where each descriptor's registration is in `registrations`.
    index: HashMap<RawFd, usize>,
    /// The array handed to the kernel, rebuilt on every wait.
    pollfds: Vec<libc::pollfd>,
}

/// A poll(2) poller: a table of registrations and a wake-up socket pair.
#[derive(Debug)]
pub struct Poller {
    table: Mutex<Table>,
    /// Readable when notified; the last entry of every wait's array.
    wake: UnixStream,
    /// Written by [`Poller::notify`].
    ringer: UnixStream,
    /// No `poll(2)`: ask every socket in turn and never sleep.
    spin: bool,
}

impl Poller {
    /// An empty table and a wake-up socket pair.
    ///
    /// # Errors
    /// Out of descriptors.
    pub fn new() -> io::Result<Poller> {
        let (wake, ringer) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        ringer.set_nonblocking(true)?;
        Ok(Poller {
            table: Mutex::default(),
            wake,
            ringer,
            spin: false,
        })
    }

    /// A poller that never waits: see the module's last paragraph.
    ///
    /// # Errors
    /// Out of descriptors.
    pub fn spinning() -> io::Result<Poller> {
        Ok(Poller {
            spin: true,
            ..Poller::new()?
        })
    }

    /// Whether it spins instead of waiting.
    pub fn spins(&self) -> bool {
        self.spin
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `source`; `edge` for emulated edge-triggered.
    ///
    /// # Errors
    /// Already registered.
    pub fn add(
        &self,
        source: &impl AsFd,
        key: usize,
        interest: Interest,
        edge: bool,
    ) -> io::Result<()> {
        let fd = source.as_fd().as_raw_fd();
        let mut table = self.table();
        if table.index.contains_key(&fd) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let at = table.registrations.len();
        table.registrations.push(Registration {
            fd,
            key,
            interest,
            edge,
            armed: interest,
            muted: false,
        });
        table.index.insert(fd, at);
        Ok(())
    }

    /// Changes the interest of a registered `source`.
    ///
    /// # Errors
    /// Not registered.
    pub fn modify(&self, source: &impl AsFd, key: usize, interest: Interest) -> io::Result<()> {
        let mut table = self.table();
        let registration = table.find(source)?;
        registration.key = key;
        registration.interest = interest;
        registration.armed = interest;
        Ok(())
    }

    /// Reports the directions of `interest` again at their next readiness.
    pub fn rearm(&self, source: &impl AsFd, interest: Interest) {
        let mut table = self.table();
        if let Ok(registration) = table.find(source) {
            registration.armed.read |= interest.read;
            registration.armed.write |= interest.write;
            registration.muted = false;
        }
    }

    /// Forgets `source`.
    ///
    /// # Errors
    /// Not registered.
    pub fn delete(&self, source: &impl AsFd) -> io::Result<()> {
        let fd = source.as_fd().as_raw_fd();
        let mut table = self.table();
        let at = table
            .index
            .remove(&fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        table.registrations.swap_remove(at);
        if let Some(moved) = table.registrations.get(at) {
            let moved = moved.fd;
            table.index.insert(moved, at);
        }
        Ok(())
    }

    /// One `poll(2)` over every registration, appending the ready ones to
    /// `list`.
    ///
    /// # Errors
    /// As `poll(2)`, except EINTR.
    pub fn wait(&self, list: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        if self.spin {
            self.ask_each(list);
            return Ok(());
        }
        let mut table = self.table();
        let Table {
            registrations,
            pollfds,
            ..
        } = &mut *table;
        // Rebuilt in full every wait: poll remembers nothing.
        pollfds.clear();
        pollfds.extend(registrations.iter().map(|r| {
            let mut events = 0;
            if r.interest.read && r.armed.read {
                events |= libc::POLLIN | READ_CLOSED;
            }
            if r.interest.write && r.armed.write {
                events |= libc::POLLOUT;
            }
            libc::pollfd {
                fd: if r.muted { -1 } else { r.fd },
                events,
                revents: 0,
            }
        }));
        pollfds.push(libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // Rounded up to whole milliseconds, so a timer never fires early
        // and a short timeout never becomes a busy poll.
        let timeout_ms = timeout.map_or(-1, |t| {
            libc::c_int::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
        });
        // SAFETY: the kernel reads and writes `pollfds.len()` entries of the
        // vector, which lives across the call.
        let ready = unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(error),
            };
        }
        if pollfds.pop().is_some_and(|wake| wake.revents != 0) {
            drain(&self.wake);
        }
        // The whole array again, to find the few that are ready.
        for (r, pollfd) in registrations.iter_mut().zip(pollfds.iter()) {
            let revents = pollfd.revents;
            if revents == 0 {
                continue;
            }
            let failed = revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0;
            let event = Event {
                key: r.key,
                readable: failed || revents & (libc::POLLIN | READ_CLOSED) != 0,
                writable: failed || revents & libc::POLLOUT != 0,
                read_closed: failed || revents & READ_CLOSED != 0,
            };
            if r.edge {
                r.armed.read &= !event.readable;
                r.armed.write &= !event.writable;
                r.muted |= failed;
            }
            list.push(event);
        }
        Ok(())
    }

    /// The spinning wait: asks every registered socket whether it is ready,
    /// one system call each, appends those that are, and returns at once.
    fn ask_each(&self, list: &mut Vec<Event>) {
        if ask(self.wake.as_raw_fd()) != Asked::NotYet {
            drain(&self.wake);
        }
        let mut table = self.table();
        for r in &mut table.registrations {
            if r.muted {
                continue;
            }
            let (read, write) = (
                r.interest.read && r.armed.read,
                r.interest.write && r.armed.write,
            );
            let asked = if read { ask(r.fd) } else { Asked::NotYet };
            let event = Event {
                key: r.key,
                readable: read && asked != Asked::NotYet,
                // Writing is left to the write to refuse (`WouldBlock`).
                writable: write || asked == Asked::Failed,
                read_closed: matches!(asked, Asked::Closed | Asked::Failed),
            };
            if !(event.readable || event.writable) {
                continue;
            }
            if r.edge {
                r.armed.read &= !event.readable;
                r.armed.write &= !event.writable;
                r.muted |= asked == Asked::Failed;
            }
            list.push(event);
        }
    }

    /// Ends the current (or next) wait from any thread.
    ///
    /// # Errors
    /// Never in practice: a full socket buffer means it is rung already.
    pub fn notify(&self) -> io::Result<()> {
        match (&self.ringer).write(&[1]) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }
}

impl Table {
    fn find(&mut self, source: &impl AsFd) -> io::Result<&mut Registration> {
        let fd = source.as_fd().as_raw_fd();
        let at = *self
            .index
            .get(&fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        Ok(&mut self.registrations[at])
    }
}

/// The peer shut its side down: `POLLRDHUP`, which Linux has; elsewhere
/// only a full hang-up (`POLLHUP`) says it.
#[cfg(target_os = "linux")]
const READ_CLOSED: libc::c_short = libc::POLLRDHUP;
#[cfg(not(target_os = "linux"))]
const READ_CLOSED: libc::c_short = 0;

/// What asking a socket for data said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// Data waits (or, on a listener, which cannot be asked so, perhaps a
    /// client: its `accept` will tell).
    Ready,
    /// The peer closed its side: a read returns 0.
    Closed,
    /// Nothing yet (`EAGAIN`).
    NotYet,
    /// An error waits: the next call returns it.
    Failed,
}

/// Asks socket `fd` for data without taking it: `recv` with `MSG_PEEK`
/// and `MSG_DONTWAIT`, one system call, the spinning loop's whole "wait".
fn ask(fd: RawFd) -> Asked {
    let mut byte = 0u8;
    // SAFETY: recv writes at most one byte into `byte`, which lives across
    // the call; MSG_PEEK leaves the data in the socket.
    let n = unsafe {
        libc::recv(
            fd,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Asked::Closed,
        n if n > 0 => Asked::Ready,
        _ => match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Asked::NotYet,
            // A listening socket cannot be peeked: let `accept` answer.
            Some(libc::ENOTCONN | libc::EINVAL | libc::EOPNOTSUPP) => Asked::Ready,
            _ => Asked::Failed,
        },
    }
}

/// Empties the wake-up socket, or poll would report it forever.
fn drain(mut wake: &UnixStream) {
    let mut buffer = [0u8; 64];
    while matches!(wake.read(&mut buffer), Ok(n) if n > 0) {}
}
