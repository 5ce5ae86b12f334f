//! The one accept step every model takes: turn what `accept()` returned into
//! what the model should do next.
//!
//! Accepting is the same in every model: admit the client against
//! `--max-connections` (and close it at once if it is one too many), prepare
//! its socket ([`prepare_stream`]), and sort a failure into "that client is
//! gone, accept the next", "out of descriptors, back off" or "the listener is
//! broken, stop". Only how a model *waits* differs: a blocking thread sleeps,
//! the selector stops watching the listener, the statemachine yields a
//! deadline, the async acceptor awaits a timer, the completion loop submits
//! its accept again later. That difference is the lesson of each model, so
//! it stays in each model's file; the sorting lives here.

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};

use crate::lab::live::{Counter, Traffic};
use crate::net::{AcceptFailure, Blocking, prepare_stream, would_block};
use crate::stats::{Ending, Stats};

/// What an accept step leaves the model to do.
#[derive(Debug)]
pub enum Accepted {
    /// A client that was admitted and is prepared for the model: serve it.
    Client(TcpStream, SocketAddr),
    /// No client is waiting (`WouldBlock`): wait for the listener's
    /// readiness. Only a non-blocking listener says this.
    Empty,
    /// The process is out of descriptors or memory: stop accepting for
    /// [`crate::net::ACCEPT_BACKOFF`], then try again. Retrying at once would
    /// fail again, and a readiness loop would spin on a listener that stays
    /// readable.
    BackOff,
    /// The listener itself is broken: stop serving, and exit non-zero.
    Fatal(io::Error),
}

/// Accepts from `listener` until there is something for the model to do:
/// clients turned away over the limit, and failures that belonged to one
/// vanished client, are handled here and the next is accepted.
pub fn accept(listener: &TcpListener, stats: &Stats, blocking: Blocking) -> Accepted {
    loop {
        if let Some(next) = sort(crate::net::accept(listener, blocking), stats) {
            return next;
        }
    }
}

/// Sorts one `accept()` result (its socket already in the model's
/// blocking mode). `None` means nothing is left to do with it
/// (a client over the limit, closed; a client that reset before we took it;
/// a socket the kernel would not prepare): accept the next.
///
/// Every admitted client is logged and counted in `stats`, and so is every
/// failure, so each model's loop is left with only its own way of waiting.
pub fn sort(accepted: io::Result<(TcpStream, SocketAddr)>, stats: &Stats) -> Option<Accepted> {
    match accepted {
        Ok((stream, peer)) => {
            if !stats.admit(peer) {
                return None; // Over the connection limit: dropping closes it.
            }
            match prepare_stream(&stream) {
                Ok(()) => Some(Accepted::Client(stream, peer)),
                Err(e) => {
                    stats.disconnected(peer, 0, Ending::Failed(e));
                    None
                }
            }
        }
        // The backlog is empty: the kernel says "not now", not "failed".
        Err(e) if would_block(&e) => Some(Accepted::Empty),
        Err(e) => match stats.accept_failed(&e) {
            AcceptFailure::Transient => None,
            AcceptFailure::Exhausted => Some(Accepted::BackOff),
            AcceptFailure::Fatal => Some(Accepted::Fatal(e)),
        },
    }
}

/// One admitted client's account, from the model taking it on to its end:
/// made, it counts the client into the model's `--stats` traffic; dropped,
/// it counts it out and logs it in `stats` with the bytes it was sent and
/// how it ended. Every model keeps one in each client's state (a
/// connection in a loop's table, a task, a thread's stack), so an end can
/// be neither forgotten nor told twice, whichever way the client goes:
/// the way `mini-redis` moves a semaphore permit into each connection's
/// task.
///
/// Kept last in the client's state, it is dropped after the socket: the
/// log says "disconnected" once the socket is closed.
pub struct Visit<'a, C: Counter = Cell<u64>> {
    peer: SocketAddr,
    /// Bytes sent back to it, for the log.
    pub bytes: u64,
    /// How it ended, once known; dropped without, it ended at shutdown.
    ending: Option<Ending>,
    /// Counts it in when made and out when dropped.
    traffic: &'a Traffic<C>,
    stats: &'a Stats,
}

impl<'a, C: Counter> Visit<'a, C> {
    /// Takes on `peer`, admitted by [`accept`]: counted into `traffic`.
    pub fn new(peer: SocketAddr, traffic: &'a Traffic<C>, stats: &'a Stats) -> Self {
        traffic.accepted();
        Visit {
            peer,
            bytes: 0,
            ending: None,
            traffic,
            stats,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Says how the client ended, for the log when this is dropped (a
    /// later word replaces an earlier one).
    pub fn ends(&mut self, ending: Ending) {
        self.ending = Some(ending);
    }

    /// Ends the account now: `ending`, counted out and logged.
    pub fn end(mut self, ending: Ending) {
        self.ends(ending);
    }
}

impl<C: Counter> Drop for Visit<'_, C> {
    fn drop(&mut self) {
        let ending = self.ending.take().unwrap_or(Ending::Shutdown);
        self.traffic.closed();
        self.stats.disconnected(self.peer, self.bytes, ending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Stats {
        Stats::new(true, 1)
    }

    /// Every client of every model holds a `Visit`, idle or not: its
    /// address, its bytes, how it ended (an `Ending` of 16 bytes), and two
    /// references.
    #[test]
    fn a_visit_stays_small() {
        let visit = std::mem::size_of::<Visit<'_>>();
        assert!(visit <= 72, "{visit}");
        let ending = std::mem::size_of::<Option<Ending>>();
        assert!(ending <= 16, "{ending}");
    }

    fn os_error(code: i32) -> io::Result<(TcpStream, SocketAddr)> {
        Err(io::Error::from_raw_os_error(code))
    }

    /// A client that reset before we took it, or a signal during the call,
    /// leaves nothing to do: the next client is accepted at once.
    #[test]
    fn a_vanished_client_is_skipped() {
        let stats = stats();
        for code in [libc::ECONNABORTED, libc::EPROTO, libc::EINTR] {
            assert!(sort(os_error(code), &stats).is_none(), "{code}");
        }
    }

    #[test]
    fn an_empty_backlog_means_wait_for_readiness() {
        let got = sort(os_error(libc::EAGAIN), &stats());
        assert!(matches!(got, Some(Accepted::Empty)), "{got:?}");
    }

    #[test]
    fn running_out_of_descriptors_backs_off() {
        let stats = stats();
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            let got = sort(os_error(code), &stats);
            assert!(matches!(got, Some(Accepted::BackOff)), "{code}: {got:?}");
        }
    }

    /// EINVAL (the listener is not listening) and EBADF cannot be retried.
    #[test]
    fn a_broken_listener_is_fatal() {
        for code in [libc::EINVAL, libc::EBADF, libc::ENOTSOCK] {
            match sort(os_error(code), &stats()) {
                Some(Accepted::Fatal(e)) => assert_eq!(e.raw_os_error(), Some(code)),
                got => panic!("{code}: {got:?}"),
            }
        }
    }

    /// A client is admitted and prepared; one past `--max-connections` is
    /// closed and the step goes on to the next.
    #[test]
    fn clients_are_admitted_up_to_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _first = TcpStream::connect(addr).unwrap();
        let _second = TcpStream::connect(addr).unwrap();
        let stats = stats();
        let first = sort(crate::net::accept(&listener, Blocking::No), &stats);
        let Some(Accepted::Client(stream, _)) = first else {
            panic!("{first:?}");
        };
        assert!(stream.nodelay().unwrap());
        assert!(sort(crate::net::accept(&listener, Blocking::No), &stats).is_none());
        assert_eq!((stats.served(), stats.rejected()), (1, 1));
    }
}
