//! The loop's own two tasks, coroutines like any client's: the notes'
//! `run_server` generator ([`Acceptor`]), and the [`Stopper`] that turns
//! the shutdown's bell into a stop.

use std::cell::Cell;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::{Coroutine, Resume, Step, Wait};
use crate::lab::live::Traffic;
use crate::net::{ACCEPT_BACKOFF, Blocking};
use crate::serve::Context;
use crate::serve::accept::{Accepted, Visit, accept};
use crate::shutdown::Shutdown;

/// Hears the shutdown's bell: `yield 'WAIT_READ', bell`, then trigger the
/// shutdown. A signal only rings the bell; this task, run by the loop like
/// any other, turns that into a stop, and the loop needs no second thread.
pub(super) struct Stopper<'a> {
    pub(super) bell: UnixStream,
    pub(super) shutdown: &'a Shutdown,
    /// Has yielded already: being resumed now means the bell rang.
    pub(super) listening: bool,
}

impl<'a> Coroutine<'a> for Stopper<'a> {
    fn resume(&mut self, _how: Resume, _step: &mut Step<'_, 'a>) -> Wait {
        if std::mem::replace(&mut self.listening, true) {
            self.shutdown.trigger();
            return Wait::Done;
        }
        Wait::Read { until: None }
    }

    fn source(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }

    fn name(&self) -> &'static str {
        "stopper"
    }
}

/// The notes' `run_server` generator: accept, spawn a client task, repeat.
pub(super) struct Acceptor<'a> {
    pub(super) listener: &'a TcpListener,
    pub(super) ctx: &'a Context,
    /// Makes a client's task.
    pub(super) client: Box<dyn FnMut(TcpStream, Visit<'a>) -> Box<dyn Coroutine<'a> + 'a> + 'a>,
    /// The loop's `--stats` traffic, which every client task counts into.
    pub(super) traffic: &'a Traffic,
    /// Where the acceptor leaves the error of a broken listener for `run`.
    pub(super) fatal: &'a Cell<Option<io::Error>>,
}

impl<'a> Coroutine<'a> for Acceptor<'a> {
    fn resume(&mut self, _how: Resume, step: &mut Step<'_, 'a>) -> Wait {
        loop {
            match accept(self.listener, &self.ctx.stats, Blocking::No) {
                Accepted::Client(stream, peer) => {
                    let visit = Visit::new(peer, self.traffic, &self.ctx.stats);
                    step.spawn((self.client)(stream, visit));
                }
                Accepted::Empty => return Wait::Read { until: None },
                // Out of descriptors: sleep instead of spinning on a
                // listener that stays readable.
                Accepted::BackOff => return Wait::Sleep(Instant::now() + ACCEPT_BACKOFF),
                // The listener is broken: hand the error to `run`, which
                // returns it once the shutdown has emptied the loop.
                Accepted::Fatal(e) => {
                    self.fatal.set(Some(e));
                    self.ctx.shutdown.trigger();
                    return Wait::Done;
                }
            }
        }
    }

    fn source(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    fn name(&self) -> &'static str {
        "run_server"
    }
}
