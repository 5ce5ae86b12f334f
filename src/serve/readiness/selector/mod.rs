//! The selector model: one thread, one readiness loop, and a handler for
//! each ready socket. The notes' `selectors` server (`sel.register(sock,
//! EVENT_READ, callback)` then `for key, _ in sel.select(): key.data(...)`),
//! with both of the flaws the notes admit fixed.
//!
//! Every socket is non-blocking and registered with one epoll
//! [`Poller`]. The key of each registration indexes a table of
//! handlers, the Rust shape of the notes' callback-as-data: `Handler::Accept`
//! for the listener, `Handler::Client` for a client. The loop waits until the
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
//! That one read is also what makes the loop fair. A turn calls each ready
//! socket's handler once, and a handler reads at most [`READ_BUFFER_SIZE`]
//! bytes and echoes them: a client that sends without pause has more
//! waiting, but it is reported again at the next wait and served then,
//! beside everyone else who is ready. No client gets a second read before
//! the others have had their first (`tests/fairness.rs` holds every model
//! to that, with four such clients and a fifth that is timed).
//!
//! Its limit: handlers run one at a time on one thread, so a handler that
//! computes for a long time stalls every other client; and one core is all
//! it uses. Shutdown: the loop watches the shutdown's bell like a socket
//! (a signal rings it); its handler triggers the shutdown, and the loop
//! deletes and closes every socket.
//!
//! Here: what the selector is, as the readiness kit's `Readiness` trait
//! asks (its handlers, its timers, its `--stats` line, how it closes a
//! client); the kit (`readiness::run`) turns it: one wait, then each event
//! to its handler, on the skeleton every one-thread loop shares
//! (`serve/turns.rs`). `connection.rs`: a client and its echo handler, the
//! notes' callback.
//! The lab's parts, which a first reading may skip: `work.rs` (`--work`
//! and `--offload`: a chunk held until its work is done) and `tally.rs`
//! (what `--stats` counts, where it happens).
//!
//! Next: [`crate::serve::statemachine`], the same loop driving generator-like tasks.
//!
//! Tutorial: `docs/tutorial/3-readiness-and-epoll.md`.

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::deadlines::IdleSweep;
use super::{Listener, Readiness};
use crate::lab::live::Traffic;
use crate::lab::meter::Meter;
use crate::poller::{Event, Events, Interest, Poller};
use crate::serve::accept::Visit;
use crate::serve::{Context, READ_BUFFER_SIZE};
use crate::stats::{Ending, Stats};

/// The most echoed bytes one client may leave unsent before we stop reading
/// from it. 64 KiB is about what one loopback socket buffer holds: enough to
/// keep a fast client streaming, small enough that 10,000 stalled clients
/// cost at most 640 MiB (a real deployment would also cap the total).
pub const MAX_UNSENT: usize = 64 * 1024;

mod connection;
mod tally;
mod work;

use connection::Connection;
use tally::Tally;
use work::WorkPlan;

/// What to do when a registered socket is ready: the notes' callback. A
/// client's handler echoes what can be echoed.
type Handler<'a> = super::Handler<Connection<'a>>;

/// Serves every client from this thread until shutdown.
///
/// # Errors
/// If the poller fails or the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let poller = Arc::new(Poller::new(ctx.config.poller)?);
    // The bell is watched until this function returns (the guard deletes it).
    let (handlers, listener, _bell) = super::start(&poller, &listener, ctx.shutdown.bell()?)?;
    let traffic = Traffic::default();
    let mut selector = Selector {
        poller: &poller,
        listener,
        handlers,
        buffer: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
        events: Events::new(),
        idle: IdleSweep::new(ctx.config.idle_timeout),
        plan: work::start_plan(ctx, &poller)?,
        next_id: 0,
        meter: Meter::new(ctx, "selector"),
        tally: Tally {
            traffic: &traffic,
            short_writes: Cell::new(0),
            would_block: Cell::new(0),
        },
        jobs_done: 0,
        ctx,
    };
    super::run(&mut selector, &ctx.shutdown)
}

/// The loop and everything it owns.
struct Selector<'a> {
    /// Every socket in `handlers` is registered here, level-triggered,
    /// under its slab key, with the interest its handler needs now; each
    /// client's `Registered` socket deletes itself from it when dropped.
    poller: &'a Poller,
    listener: Listener<'a>,
    /// The handler of each registered socket, by key: the listener, the
    /// shutdown's bell, and one `Echo` per client. A key is vacant once its
    /// client is closed, so an event for it later in the same batch is
    /// recognised as stale.
    handlers: Slab<Handler<'a>>,
    /// One read buffer for every client: a read is echoed (or moved to the
    /// client's `unsent`) before the next read, so nothing stays in it.
    buffer: Box<[u8]>,
    /// What the last wait reported, kept to reuse its memory.
    events: Events,
    /// When to look for idle clients next; `None` without `--idle-timeout`.
    idle: Option<IdleSweep>,
    /// `--work`, if given; without it the echo path is untouched.
    plan: Option<WorkPlan>,
    /// The id of the next client.
    next_id: u64,
    /// Stalls past `--slow-handler`; turns and lines for `--stats`.
    meter: Meter<'a>,
    /// What the clients did, for `--stats`, counted as it happens.
    tally: Tally<'a>,
    /// Offloaded jobs come back since the last line: each rang the poller
    /// from a pool thread (a cross-thread wake-up).
    jobs_done: u64,
    ctx: &'a Context,
}

impl<'a> Readiness<'a> for Selector<'a> {
    type Client = Connection<'a>;

    fn table(&self) -> (&Events, &Slab<Handler<'a>>) {
        (&self.events, &self.handlers)
    }

    /// Adds an admitted client to the table and to the poller, interested
    /// in reading.
    fn register(&mut self, stream: TcpStream, peer: SocketAddr) {
        let entry = self.handlers.vacant_entry();
        let key = entry.key();
        let visit = Visit::new(peer, self.tally.traffic, &self.ctx.stats);
        if self.ctx.config.naive_send {
            // --naive-send, wrong on purpose: a blocking socket, so that
            // each echo's write is the notes' `sendall`, which returns only
            // once the client has taken every byte. With a client that
            // never reads, it never returns, and the loop with it.
            if let Err(e) = stream.set_nonblocking(false) {
                return visit.end(Ending::Failed(e));
            }
        }
        // Watched until the connection is dropped (in `close`).
        let stream = match self.poller.register(stream, key, Interest::READ) {
            Ok(stream) => stream,
            Err(e) => return visit.end(Ending::Failed(e)),
        };
        entry.insert(Handler::Client(Connection {
            stream,
            unsent: Vec::new(),
            read_closed: false,
            interest: Interest::READ,
            last_active: Instant::now(),
            id: self.next_id,
            working: false,
            held: Vec::new(),
            visit,
        }));
        self.next_id += 1;
    }

    fn meter(&mut self) -> &mut Meter<'a> {
        &mut self.meter
    }

    fn on_client(&mut self, event: Event, now: Instant) {
        let Some(Handler::Client(conn)) = self.handlers.get_mut(event.key) else {
            return;
        };
        let plan = self.plan.as_mut();
        let (buffer, tally) = (&mut self.buffer, &self.tally);
        if let Some(ending) = conn.on_ready(event, now, self.poller, buffer, plan, tally) {
            self.close(event.key, ending);
        }
    }

    fn listener(&mut self) -> (&mut Listener<'a>, &Stats) {
        (&mut self.listener, &self.ctx.stats)
    }

    fn timeout(&self) -> Option<Duration> {
        let work_timer = self.plan.as_ref().and_then(WorkPlan::deadline);
        super::deadlines::until_earliest([
            self.listener.paused_until(),
            self.idle.as_ref().map(IdleSweep::next),
            work_timer,
            self.meter.deadline(),
        ])
    }

    fn waiting(&mut self) -> (&Poller, &mut Events) {
        (self.poller, &mut self.events)
    }

    /// Deletes a client from the poller (before its socket closes), from the
    /// table, and logs how it ended.
    fn close(&mut self, key: usize, ending: Ending) {
        if let Some(Handler::Client(mut conn)) = self.handlers.try_remove(key) {
            conn.visit.ends(ending);
            // Dropping it deletes it from the poller, closes it, then
            // counts it out and logs it.
            drop(conn);
        }
    }

    fn report(&mut self, now: Instant, last: bool) {
        self.stats_line(now, last);
    }

    fn after(&mut self, now: Instant) -> io::Result<()> {
        self.finish_jobs(now);
        self.run_timers(now)
    }
}

impl Selector<'_> {
    /// Resumes accepting after a back-off, echoes the chunks whose `wait`
    /// is over, and closes idle clients.
    fn run_timers(&mut self, now: Instant) -> io::Result<()> {
        self.echo_held_chunks_due(now);
        self.listener.resume_if_due(now)?;
        if let Some(idle) = self.idle.as_mut().and_then(|idle| idle.due(now)) {
            // A client whose chunk is with its work is busy, not idle.
            let idle_keys: Vec<usize> = (self.handlers.iter())
                .filter(|(_, handler)| {
                    matches!(handler, Handler::Client(conn)
                    if !conn.working && idle.is_idle(conn.last_active, now))
                })
                .map(|(key, _)| key)
                .collect();
            for key in idle_keys {
                self.close(key, Ending::IdleTimeout);
            }
        }
        Ok(())
    }
}
