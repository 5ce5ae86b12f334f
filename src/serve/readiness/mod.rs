//! The readiness kit: what the readiness loops (the selector, and the
//! chat's selector) share, so that neither reaches into the other's file:
//! the table of handlers and where it starts (`start`), the dispatch of
//! each event to its handler, the loop's turns (`run`: wait, dispatch,
//! timers, `--stats`, and closing every client at shutdown), and
//! the listener: accept the next client, and pause on running out of
//! descriptors without spinning.
//! (The statemachine and async runtimes accept through their own tasks,
//! as the notes' do.)

pub mod deadlines;
pub mod selector;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::lab::meter::Meter;
use crate::net::{ACCEPT_BACKOFF, Blocking};
use crate::poller::{Event, Events, Interest, Poller, Registered};
use crate::serve::accept::{Accepted, accept};
use crate::serve::turns::{self, Turns};
use crate::shutdown::Shutdown;
use crate::stats::{Ending, Stats};

/// What a readiness loop does when a registered socket is ready: the notes'
/// callback, as data. The listener and the shutdown's bell are the same in
/// every loop; `C` is the loop's own client.
pub(crate) enum Handler<C> {
    /// The listener is readable: accept the waiting clients.
    Accept,
    /// The shutdown's bell rang (a signal, or `Shutdown::trigger`): stop.
    Stop,
    /// A client is readable or writable.
    Client(C),
}

/// Where a readiness loop starts: its table of handlers, holding the
/// listener's entry and the bell's; the listener, registered to read
/// under its key; and `bell` (the shutdown's), watched under its key for
/// as long as the returned guard lives.
///
/// # Errors
/// If the poller refuses a socket.
pub(crate) fn start<'p, C>(
    poller: &'p Poller,
    listener: &'p TcpListener,
    bell: UnixStream,
) -> io::Result<(Slab<Handler<C>>, Listener<'p>, Registered<'p, UnixStream>)> {
    let mut handlers = Slab::new();
    let listener_key = handlers.insert(Handler::Accept);
    let bell_key = handlers.insert(Handler::Stop);
    let bell = poller.register(bell, bell_key, Interest::READ)?;
    let listener = Listener::register(poller, listener, listener_key)?;
    Ok((handlers, listener, bell))
}

/// A readiness loop, as [`run`] turns it: its table of handlers, how it
/// takes in a client and handles a ready one (the notes' callbacks), how
/// long it may wait, what it does after each batch, its `--stats` line,
/// and how it closes a client.
pub(crate) trait Readiness<'a> {
    /// The loop's own client.
    type Client;
    /// The events of the last wait, and the handlers, by key.
    fn table(&self) -> (&Events, &Slab<Handler<Self::Client>>);
    /// Takes in a client the listener accepted: registers it to read.
    fn register(&mut self, stream: TcpStream, peer: SocketAddr);
    /// A client's socket is ready: its handler, the notes' callback.
    fn on_client(&mut self, event: Event, now: Instant);
    /// The listener, and the counters its accepts go to.
    fn listener(&mut self) -> (&mut Listener<'a>, &Stats);
    /// How long the next wait may last: until the next timer, or forever.
    fn timeout(&self) -> Option<Duration>;
    /// The poller it waits on, and the events its waits fill.
    fn waiting(&mut self) -> (&Poller, &mut Events);
    /// Writes a `--stats` line (the final one if `last`).
    fn report(&mut self, now: Instant, last: bool);
    /// Its meter: stalls past `--slow-handler`, turns for `--stats`.
    fn meter(&mut self) -> &mut Meter<'a>;
    /// Closes the client under `key`, which ended as `ending`.
    fn close(&mut self, key: usize, ending: Ending);
    /// What comes after a batch: deliveries, jobs done, timers due.
    ///
    /// # Errors
    /// If the listener breaks.
    fn after(&mut self, now: Instant) -> io::Result<()>;
}

/// Turns a readiness loop until `shutdown`: one wait for a whole batch of
/// ready sockets, each handed to its handler, then the timers; at the
/// end, every client closed.
///
/// # Errors
/// If the poller fails or the listener breaks.
pub(crate) fn run<'a>(l: &mut impl Readiness<'a>, shutdown: &Shutdown) -> io::Result<()> {
    turns::run(&mut Turning(l, shutdown), shutdown)
}

/// A readiness loop seen as [`Turns`], and the shutdown its bell triggers.
struct Turning<'l, L>(&'l mut L, &'l Shutdown);

impl<'a, L: Readiness<'a>> Turns<'a> for Turning<'_, L> {
    fn meter(&mut self) -> &mut Meter<'a> {
        self.0.meter()
    }

    fn wait(&mut self) -> io::Result<()> {
        let timeout = self.0.timeout();
        let (poller, events) = self.0.waiting();
        poller.wait(events, timeout).map(drop)
    }

    fn handle(&mut self, now: Instant) -> io::Result<usize> {
        dispatch(self.0, now, self.1)
    }

    fn after(&mut self, now: Instant) -> io::Result<()> {
        self.0.after(now)
    }

    fn report(&mut self, now: Instant, last: bool) {
        self.0.report(now, last);
    }

    fn close_all(&mut self) {
        let keys: Vec<usize> = self.0.table().1.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.0.close(key, Ending::Shutdown);
        }
    }
}

/// Hands each event of the last wait to its socket's handler (the notes'
/// `callback = key.data; callback(key.fileobj)`), and says how many there
/// were: the listener's takes in every waiting client (the notes'
/// `accept`), the bell's triggers `shutdown`. By index, not by iterator: a
/// handler changes the loop. An event whose key is vacant is of a client
/// closed earlier in the same batch.
///
/// # Errors
/// If the listener is broken.
fn dispatch<'a>(
    l: &mut impl Readiness<'a>,
    now: Instant,
    shutdown: &Shutdown,
) -> io::Result<usize> {
    let mut handled = 0;
    loop {
        let (events, handlers) = l.table();
        let Some(event) = events.get(handled) else {
            return Ok(handled);
        };
        handled += 1;
        match handlers.get(event.key) {
            Some(Handler::Accept) => accept_clients(l)?,
            Some(Handler::Stop) => shutdown.trigger(),
            Some(Handler::Client(_)) => l.on_client(event, now),
            None => {}
        }
    }
}

/// Takes in every client waiting in the backlog.
fn accept_clients<'a>(l: &mut impl Readiness<'a>) -> io::Result<()> {
    loop {
        let (listener, stats) = l.listener();
        let Some((stream, peer)) = listener.next_client(stats)? else {
            return Ok(());
        };
        l.register(stream, peer);
    }
}

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
