//! The readiness kit: what the readiness loops (the selector, and the
//! chat's selector) share, so that neither reaches into the other's file.
//! Today that is the listener: accept the next client, and pause on running
//! out of descriptors without spinning. (The statemachine and async
//! runtimes accept through their own tasks, as the notes' do.)

pub mod deadlines;
pub mod selector;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use crate::net::{ACCEPT_BACKOFF, Blocking};
use crate::poller::{Interest, Poller, Registered};
use crate::serve::accept::{Accepted, accept};
use crate::stats::Stats;

/// A readiness loop's listener, registered level-triggered in its poller
/// for as long as it lives: the selector's, and the chat selector's.
pub(crate) struct Listener<'a> {
    socket: Registered<'a, &'a TcpListener>,
    /// Set while accepting is paused after running out of descriptors:
    /// the listener is then registered for nothing.
    paused_until: Option<Instant>,
}

impl<'a> Listener<'a> {
    /// `socket`, registered in `poller` under `key`, to read.
    ///
    /// # Errors
    /// If the poller refuses it.
    pub(crate) fn register(
        poller: &'a Poller,
        socket: &'a TcpListener,
        key: usize,
    ) -> io::Result<Self> {
        Ok(Listener {
            socket: poller.register(socket, key, Interest::READ)?,
            paused_until: None,
        })
    }

    /// The next client waiting in the backlog (the notes' `accept`), or
    /// `None` when the backlog is empty or accepting pauses.
    ///
    /// # Errors
    /// If the listener is broken, or the poller fails.
    pub(crate) fn next_client(
        &mut self,
        stats: &Stats,
    ) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        match accept(&self.socket, stats, Blocking::No) {
            Accepted::Client(stream, peer) => Ok(Some((stream, peer))),
            // The backlog is empty: wait for the next readiness event.
            Accepted::Empty => Ok(None),
            Accepted::BackOff => {
                // The pending client stays in the backlog, so the listener
                // stays readable: keep watching it and the loop would spin.
                // Stop watching it for a while.
                self.socket.modify(Interest::NONE)?;
                self.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                Ok(None)
            }
            Accepted::Fatal(e) => Err(e),
        }
    }

    /// When accepting resumes, if it is paused.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Watches the listener again once its pause is over.
    ///
    /// # Errors
    /// If the poller fails.
    pub(crate) fn resume_if_due(&mut self, now: Instant) -> io::Result<()> {
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
            self.socket.modify(Interest::READ)?;
        }
        Ok(())
    }
}
