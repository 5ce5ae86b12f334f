//! The selector model: one thread, one readiness loop, and a handler for
//! each ready socket. The notes' `selectors` server (`sel.register(sock,
//! EVENT_READ, callback)` then `for key, _ in sel.select(): key.data(...)`),
//! with both of the flaws the notes admit fixed.
//!
//! Every socket is non-blocking and registered with one epoll
//! [`Poller`]. The key of each registration indexes a table of
//! handlers, the Rust shape of the notes' callback-as-data: `Handler::Accept`
//! for the listener, `Handler::Echo` for a client. The loop waits until the
//! kernel reports sockets ready, runs each one's handler, and repeats; no call
//! ever blocks, so one thread serves thousands of clients.
//!
//! The notes' two flaws, fixed:
//! - *"assume sendall won't block"*: a client's write may take only part of
//!   what we offer. The rest waits in the connection's `unsent` buffer, and
//!   we ask for write readiness only while that buffer is not empty.
//! - unbounded buffering: a client that sends but never reads would make
//!   `unsent` grow forever. Once it holds [`MAX_UNSENT`] bytes we stop
//!   reading that client (back-pressure) until it drains; its bytes wait in
//!   the kernel's socket buffers, then in the client's own.
//!
//! The poll mode is chosen for the syscall count: level-triggered. In
//! oneshot mode every event disarms the socket, and re-arming it costs an
//! `epoll_ctl` per message; edge-triggered mode never reports a socket again
//! until new data arrives, so each handler would have to read until
//! `WouldBlock` (one wasted `read` per message) or remember what it left
//! unread (the async reactor's bookkeeping). Level-triggered, a socket
//! stays registered with the interest it needs, the handler reads once, and
//! whatever it leaves is reported again by the next wait. A steady exchange
//! costs one `read`, one `write` and a share of one wait.
//!
//! Its limit: handlers run one at a time on one thread, so a handler that
//! computes for a long time stalls every other client; and one core is all
//! it uses. Shutdown: the loop watches the shutdown's bell like a socket
//! (a signal rings it); its handler triggers the shutdown, and the loop
//! deletes and closes every socket.
//!
//! Next: [`super::statemachine`], the same loop driving generator-like tasks.
//!
//! Tutorial: `docs/tutorial/3-readiness-and-epoll.md`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use slab::Slab;

use super::accept::{Accepted, accept};
use super::{Context, READ_BUFFER_SIZE};
use crate::epoll::{Event, Events, Interest, Poller};
use crate::net::{ACCEPT_BACKOFF, Blocking, interrupted, would_block};
use crate::stats::Ending;

/// The most echoed bytes one client may leave unsent before we stop reading
/// from it. 64 KiB is about what one loopback socket buffer holds: enough to
/// keep a fast client streaming, small enough that 10,000 stalled clients
/// cost at most 640 MiB (a real deployment would also cap the total).
pub const MAX_UNSENT: usize = 64 * 1024;

/// What to do when a registered socket is ready: the notes' callback.
enum Handler {
    /// The listener is readable: accept the waiting clients.
    Accept,
    /// The shutdown bell rang (a signal, or `Shutdown::trigger`): stop.
    Stop,
    /// A client is readable or writable: echo what can be echoed.
    Echo(Connection),
}

/// One client and the bytes it is owed.
struct Connection {
    /// Registered in the poller until `Selector::close` deletes it.
    stream: TcpStream,
    /// Who it is, for the log.
    peer: SocketAddr,
    /// Echoed bytes the socket has not taken yet, oldest first.
    unsent: Vec<u8>,
    /// The client shut down its write side (read returned 0).
    read_closed: bool,
    /// What the poller watches for it now: read while it may read and
    /// `unsent` is under the cap, write while `unsent` is not empty.
    interest: Interest,
    /// Bytes echoed to it so far, for the log.
    bytes: u64,
    /// When it last sent or took bytes, for the idle sweep.
    last_active: Instant,
}

/// Serves every client from this thread until shutdown.
///
/// # Errors
/// If the poller fails or the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let poller = Poller::new()?;
    let bell = ctx.shutdown.bell()?;
    let mut handlers = Slab::new();
    let listener_key = handlers.insert(Handler::Accept);
    let bell_key = handlers.insert(Handler::Stop);
    // A source is deleted from the poller before it closes: the listener
    // and the bell at the end of this function, every client in `close`.
    poller.add(&listener, listener_key, Interest::READ)?;
    poller.add(&bell, bell_key, Interest::READ)?;

    let mut selector = Selector {
        poller: &poller,
        listener: &listener,
        listener_key,
        handlers,
        buffer: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
        accept_paused_until: None,
        next_idle_sweep: ctx
            .config
            .idle_timeout
            .map(|t| Instant::now() + sweep_interval(t)),
        ctx,
    };
    let served = selector.serve();
    selector.close_all();
    poller.delete(&bell)?;
    poller.delete(&listener)?;
    served
}

/// The loop and everything it owns.
struct Selector<'a> {
    /// Every socket in `handlers` is registered here, level-triggered,
    /// under its slab key, with the interest its handler needs now; a
    /// client is deleted from it in `close`, before its socket is dropped.
    poller: &'a Poller,
    listener: &'a TcpListener,
    /// The listener's key: registered for reading, or for nothing while
    /// `accept_paused_until` is set.
    listener_key: usize,
    /// The handler of each registered socket, by key: the listener, the
    /// shutdown's bell, and one `Echo` per client. A key is vacant once its
    /// client is closed, so an event for it later in the same batch is
    /// recognised as stale.
    handlers: Slab<Handler>,
    /// One read buffer for every client: a read is echoed (or moved to the
    /// client's `unsent`) before the next read, so nothing stays in it.
    buffer: Box<[u8]>,
    /// Set while accepting is paused after running out of descriptors.
    accept_paused_until: Option<Instant>,
    /// When to look for idle clients next; `None` without `--idle-timeout`.
    next_idle_sweep: Option<Instant>,
    ctx: &'a Context,
}

impl Selector<'_> {
    /// The readiness loop: wait, dispatch each event to its handler, repeat.
    fn serve(&mut self) -> io::Result<()> {
        let mut events = Events::new();
        while !self.ctx.shutdown.is_triggered() {
            // One epoll_wait for a whole batch of ready sockets.
            self.poller.wait(&mut events, self.timeout())?;
            // One clock reading per batch, not per message: it only dates
            // activity for the idle sweep, which is coarser anyway.
            let now = Instant::now();
            for event in events.iter() {
                match self.handlers.get_mut(event.key) {
                    Some(Handler::Accept) => self.accept_clients()?,
                    Some(Handler::Stop) => self.ctx.shutdown.trigger(),
                    Some(Handler::Echo(conn)) => {
                        if let Some(ending) =
                            conn.on_ready(event, now, self.poller, &mut self.buffer)
                        {
                            self.close(event.key, ending);
                        }
                    }
                    // Closed earlier in this batch.
                    None => {}
                }
            }
            self.run_timers(now)?;
        }
        Ok(())
    }

    /// How long the next wait may last: until the next timer, or forever.
    fn timeout(&self) -> Option<Duration> {
        let next = match (self.accept_paused_until, self.next_idle_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Accepts every client waiting in the backlog (the notes' `accept`).
    fn accept_clients(&mut self) -> io::Result<()> {
        loop {
            match accept(self.listener, &self.ctx.stats, Blocking::No) {
                Accepted::Client(stream, peer) => self.register(stream, peer),
                // The backlog is empty: wait for the next readiness event.
                Accepted::Empty => return Ok(()),
                Accepted::BackOff => {
                    // The pending client stays in the backlog, so the
                    // listener stays readable: keep watching it and the
                    // loop would spin. Stop watching it for a while.
                    let key = self.listener_key;
                    self.poller.modify(self.listener, key, Interest::NONE)?;
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return Ok(());
                }
                Accepted::Fatal(e) => return Err(e),
            }
        }
    }

    /// Adds an admitted client to the table and to the poller, interested
    /// in reading.
    fn register(&mut self, stream: TcpStream, peer: SocketAddr) {
        let entry = self.handlers.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poller.add(&stream, key, Interest::READ) {
            self.ctx.stats.disconnected(peer, 0, Ending::Failed(e));
            return;
        }
        entry.insert(Handler::Echo(Connection {
            stream,
            peer,
            unsent: Vec::new(),
            read_closed: false,
            interest: Interest::READ,
            bytes: 0,
            last_active: Instant::now(),
        }));
    }

    /// Resumes accepting after a back-off, and closes idle clients.
    fn run_timers(&mut self, now: Instant) -> io::Result<()> {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            let key = self.listener_key;
            self.poller.modify(self.listener, key, Interest::READ)?;
        }
        if let (Some(sweep), Some(idle)) = (self.next_idle_sweep, self.ctx.config.idle_timeout) {
            if sweep <= now {
                let idle_keys: Vec<usize> = self
                    .handlers
                    .iter()
                    .filter_map(|(key, handler)| match handler {
                        Handler::Echo(conn) if now.duration_since(conn.last_active) >= idle => {
                            Some(key)
                        }
                        _ => None,
                    })
                    .collect();
                for key in idle_keys {
                    self.close(key, Ending::IdleTimeout);
                }
                self.next_idle_sweep = Some(now + sweep_interval(idle));
            }
        }
        Ok(())
    }

    /// Deletes a client from the poller (before its socket closes), from the
    /// table, and logs how it ended.
    fn close(&mut self, key: usize, ending: Ending) {
        if let Some(Handler::Echo(conn)) = self.handlers.try_remove(key) {
            let _ = self.poller.delete(&conn.stream);
            self.ctx.stats.disconnected(conn.peer, conn.bytes, ending);
        }
    }

    fn close_all(&mut self) {
        let keys: Vec<usize> = self.handlers.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, Ending::Shutdown);
        }
    }
}

/// Idle clients are found by a sweep over every connection; sweeping four
/// times per timeout closes a client between 1 and 1.25 timeouts after its
/// last activity, and costs one pass over the table per quarter timeout.
fn sweep_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).max(Duration::from_millis(1))
}

impl Connection {
    /// The echo handler (the notes' `recv_and_send`): called with whatever
    /// the kernel reported ready; returns how the connection ended, if it did.
    ///
    /// Error and hang-up conditions are reported as both readable and
    /// writable, so whatever call we make next returns the error.
    fn on_ready(
        &mut self,
        event: Event,
        now: Instant,
        poller: &Poller,
        buffer: &mut [u8],
    ) -> Option<Ending> {
        let key = event.key;
        if event.writable {
            if let Err(e) = self.flush(now) {
                return Some(Ending::Failed(e));
            }
        }
        if event.readable && self.interest.read {
            match self.read_and_echo(buffer, now) {
                Ok(()) => {}
                Err(e) => return Some(Ending::Failed(e)),
            }
        }
        if self.read_closed && self.unsent.is_empty() {
            // Half-closed and every byte delivered: done.
            return Some(Ending::Closed);
        }
        // Level-triggered interest only changes when the buffer crosses
        // empty or full: in steady ping-pong there is no epoll_ctl at all.
        let wanted = Interest {
            read: !self.read_closed && self.unsent.len() < MAX_UNSENT,
            write: !self.unsent.is_empty(),
        };
        if wanted != self.interest {
            if let Err(e) = poller.modify(&self.stream, key, wanted) {
                return Some(Ending::Failed(e));
            }
            self.interest = wanted;
        }
        None
    }

    /// One `read()`, then echo what it brought: written at once if nothing
    /// is queued before it (the common case: no copy), queued otherwise.
    fn read_and_echo(&mut self, buffer: &mut [u8], now: Instant) -> io::Result<()> {
        let room = buffer.len().min(MAX_UNSENT - self.unsent.len());
        let n = match self.stream.read(&mut buffer[..room]) {
            Ok(0) => {
                self.read_closed = true;
                return Ok(());
            }
            Ok(n) => n,
            // A spurious wake-up: nothing to read after all.
            Err(e) if would_block(&e) || interrupted(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.last_active = now;
        let data = &buffer[..n];
        if self.unsent.is_empty() {
            let written = write_some(&mut self.stream, data)?;
            self.bytes += written as u64;
            self.unsent.extend_from_slice(&data[written..]);
        } else {
            self.unsent.extend_from_slice(data);
            self.flush(now)?;
        }
        Ok(())
    }

    /// Writes as much of `unsent` as the socket takes now.
    fn flush(&mut self, now: Instant) -> io::Result<()> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let written = write_some(&mut self.stream, &self.unsent)?;
        self.unsent.drain(..written);
        self.bytes += written as u64;
        if written > 0 {
            self.last_active = now;
        }
        Ok(())
    }
}

/// One `write()`: returns how many bytes the socket took, 0 if it would
/// block. A partial write is normal for a non-blocking socket.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if would_block(&e) => return Ok(0),
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}
