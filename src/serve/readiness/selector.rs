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
//! Next: [`crate::serve::statemachine`], the same loop driving generator-like tasks.
//!
//! Tutorial: `docs/tutorial/3-readiness-and-epoll.md`.

use std::cell::Cell;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::Listener;
use super::deadlines::sweep_interval;
use crate::lab::defer::{Deferrals, Started};
use crate::lab::live::{Counter, Traffic};
use crate::lab::meter::Meter;
use crate::lab::offload::{Finished, Offload};
use crate::net::{interrupted, would_block, write_some};
use crate::poller::{Event, Events, Interest, Poller, Registered};
use crate::serve::accept::Visit;
use crate::serve::{Context, READ_BUFFER_SIZE};
use crate::stats::Ending;

/// The most echoed bytes one client may leave unsent before we stop reading
/// from it. 64 KiB is about what one loopback socket buffer holds: enough to
/// keep a fast client streaming, small enough that 10,000 stalled clients
/// cost at most 640 MiB (a real deployment would also cap the total).
pub const MAX_UNSENT: usize = 64 * 1024;

/// What to do when a registered socket is ready: the notes' callback.
enum Handler<'a> {
    /// The listener is readable: accept the waiting clients.
    Accept,
    /// The shutdown bell rang (a signal, or `Shutdown::trigger`): stop.
    Stop,
    /// A client is readable or writable: echo what can be echoed.
    Echo(Connection<'a>),
}

/// One client and the bytes it is owed.
struct Connection<'a> {
    /// Registered in the poller for as long as the connection lives.
    stream: Registered<'a, TcpStream>,
    /// Echoed bytes the socket has not taken yet, oldest first.
    unsent: Vec<u8>,
    /// The client shut down its write side (read returned 0).
    read_closed: bool,
    /// What the poller watches for it now: read while it may read and
    /// `unsent` is under the cap, write while `unsent` is not empty.
    interest: Interest,
    /// When it last sent or took bytes, for the idle sweep.
    last_active: Instant,
    /// Unique over the loop's life: a slab key is reused once its client is
    /// gone, this is not, so a job or timer of a client that left cannot
    /// reach the next one.
    id: u64,
    /// Its chunk is with `--work` (a timer or a pool thread): it reads
    /// nothing more until that chunk is echoed, so bytes stay in order.
    working: bool,
    /// The chunk waiting out `wait` work (empty otherwise; kept to reuse).
    held: Vec<u8>,
    /// Who it is and the bytes echoed to it: counted out and logged when
    /// the connection is dropped, after its socket.
    visit: Visit<'a>,
}

/// `--work`, if given: clients are keyed by slot and id (never reused).
type WorkPlan = Deferrals<(usize, u64)>;

/// Serves every client from this thread until shutdown.
///
/// # Errors
/// If the poller fails or the listener breaks.
pub fn run(listener: TcpListener, ctx: &Context) -> io::Result<()> {
    let poller = Arc::new(Poller::new(ctx.config.poller)?);
    let bell = ctx.shutdown.bell()?;
    let mut handlers = Slab::new();
    let listener_key = handlers.insert(Handler::Accept);
    let bell_key = handlers.insert(Handler::Stop);
    // Watched until this function returns (the guard deletes it).
    let _bell = poller.register(&bell, bell_key, Interest::READ)?;

    let plan = match ctx.config.work {
        Some(work) => {
            let pool = match ctx.config.offload {
                0 => None,
                threads => Some((
                    Offload::start(ctx, threads, "selector")?,
                    Finished::new(poller.clone()),
                )),
            };
            Some(WorkPlan::new(work, pool))
        }
        None => None,
    };
    let traffic = Traffic::default();
    let mut selector = Selector {
        poller: &poller,
        listener: Listener::register(&poller, &listener, listener_key)?,
        handlers,
        buffer: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
        next_idle_sweep: ctx
            .config
            .idle_timeout
            .map(|t| Instant::now() + sweep_interval(t)),
        plan,
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
    let served = selector.serve();
    selector.close_all();
    selector.report(Instant::now(), true);
    served
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
    /// When to look for idle clients next; `None` without `--idle-timeout`.
    next_idle_sweep: Option<Instant>,
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

impl Selector<'_> {
    /// The readiness loop: wait, dispatch each event to its handler, repeat.
    fn serve(&mut self) -> io::Result<()> {
        let mut events = Events::new();
        while !self.ctx.shutdown.is_triggered() {
            self.meter.waiting();
            // One epoll_wait for a whole batch of ready sockets.
            let ready = self.poller.wait(&mut events, self.timeout())?;
            // One clock reading per batch, not per message: it only dates
            // activity for the idle sweep, which is coarser anyway.
            let now = Instant::now();
            self.meter.woke(now, ready);
            for event in events.iter() {
                match self.handlers.get_mut(event.key) {
                    Some(Handler::Accept) => self.accept_clients()?,
                    Some(Handler::Stop) => self.ctx.shutdown.trigger(),
                    Some(Handler::Echo(conn)) => {
                        let plan = self.plan.as_mut();
                        let (buffer, tally) = (&mut self.buffer, &self.tally);
                        let ending = conn.on_ready(event, now, self.poller, buffer, plan, tally);
                        if let Some(ending) = ending {
                            self.close(event.key, ending);
                        }
                    }
                    // Closed earlier in this batch.
                    None => {}
                }
            }
            self.finish_jobs(now);
            self.run_timers(now)?;
            if self.meter.due(now) {
                self.report(now, false);
            }
        }
        Ok(())
    }

    /// One `--stats` line: traffic, turns, timers, jobs come back.
    fn report(&mut self, now: Instant, last: bool) {
        let open = self.handlers.len().saturating_sub(2) as u64;
        let timers = self.plan.as_ref().map_or(0, WorkPlan::held)
            + usize::from(self.listener.paused_until().is_some())
            + usize::from(self.next_idle_sweep.is_some());
        let jobs_done = std::mem::take(&mut self.jobs_done);
        let (short_writes, would_block) = (
            self.tally.short_writes.take(),
            self.tally.would_block.take(),
        );
        self.meter
            .report(now, last, self.tally.traffic, open, |line| {
                line.gauge("timers", timers as u64)
                    .count("cross_wakeups", jobs_done)
                    .count("short_writes", short_writes)
                    .count("would_block", would_block);
            });
    }

    /// How long the next wait may last: until the next timer, or forever.
    fn timeout(&self) -> Option<Duration> {
        let work_timer = self.plan.as_ref().and_then(WorkPlan::deadline);
        super::deadlines::until_earliest([
            self.listener.paused_until(),
            self.next_idle_sweep,
            work_timer,
            self.meter.deadline(),
        ])
    }

    /// Echoes the chunks whose offloaded work is done. The pool rang the
    /// poller for each, so the loop woke up for them.
    fn finish_jobs(&mut self, now: Instant) {
        let Some(plan) = self.plan.as_ref() else {
            return;
        };
        for ((key, id), data) in plan.finished() {
            self.resume(key, id, now, |conn, now, tally| {
                conn.echo(&data, now, tally)
            });
        }
    }

    /// Resumes client `(key, id)` after its work, if it is still there:
    /// echoes its chunk with `echo`, then lets it read again.
    fn resume(
        &mut self,
        key: usize,
        id: u64,
        now: Instant,
        echo: impl FnOnce(&mut Connection<'_>, Instant, &Tally<'_>) -> io::Result<()>,
    ) {
        let Some(Handler::Echo(conn)) = self.handlers.get_mut(key) else {
            return; // Gone while it worked: its chunk is dropped.
        };
        if conn.id != id || !conn.working {
            return; // The key belongs to a newer client now.
        }
        conn.working = false;
        self.jobs_done += 1;
        let ending = match echo(conn, now, &self.tally) {
            Ok(()) => conn.settle(key, self.poller),
            Err(e) => Some(Ending::Failed(e)),
        };
        if let Some(ending) = ending {
            self.close(key, ending);
        }
    }

    /// Accepts every client waiting in the backlog (the notes' `accept`).
    fn accept_clients(&mut self) -> io::Result<()> {
        while let Some((stream, peer)) = self.listener.next_client(&self.ctx.stats)? {
            self.register(stream, peer);
        }
        Ok(())
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
        entry.insert(Handler::Echo(Connection {
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

    /// Resumes accepting after a back-off, echoes the chunks whose `wait`
    /// is over, and closes idle clients.
    fn run_timers(&mut self, now: Instant) -> io::Result<()> {
        while let Some((key, id)) = self.plan.as_mut().and_then(|plan| plan.due(now)) {
            self.resume(key, id, now, |conn, now, tally| {
                let held = std::mem::take(&mut conn.held);
                let echoed = conn.echo(&held, now, tally);
                conn.held = held;
                conn.held.clear();
                echoed
            });
        }
        self.listener.resume_if_due(now)?;
        if let (Some(sweep), Some(idle)) = (self.next_idle_sweep, self.ctx.config.idle_timeout) {
            if sweep <= now {
                let idle_keys: Vec<usize> = self
                    .handlers
                    .iter()
                    .filter_map(|(key, handler)| match handler {
                        // A client whose chunk is with its work is busy, not idle.
                        Handler::Echo(conn)
                            if !conn.working && now.duration_since(conn.last_active) >= idle =>
                        {
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
        if let Some(Handler::Echo(mut conn)) = self.handlers.try_remove(key) {
            conn.visit.ends(ending);
            // Dropping it deletes it from the poller, closes it, then
            // counts it out and logs it.
            drop(conn);
        }
    }

    fn close_all(&mut self) {
        let keys: Vec<usize> = self.handlers.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, Ending::Shutdown);
        }
    }
}

/// What the loop counts for `--stats`, where it happens: the traffic
/// (which each client's [`Visit`] also counts in and out), and the calls
/// that did less than asked, since the last line.
struct Tally<'a> {
    traffic: &'a Traffic,
    /// Writes the socket took only part of: the case the notes' `sendall`
    /// never meets, because it blocks instead.
    short_writes: Cell<u64>,
    /// Reads that found nothing (`WouldBlock`): a wake-up for nothing,
    /// which a readiness backend rarely gives and `--poller spin` gives
    /// every turn.
    would_block: Cell<u64>,
}

impl Tally<'_> {
    /// A write took `written` of `offered` bytes.
    fn wrote(&self, written: usize, offered: usize) {
        self.traffic.wrote(written);
        if written < offered {
            self.short_writes.add(1);
        }
    }
}

impl Connection<'_> {
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
        plan: Option<&mut WorkPlan>,
        tally: &Tally<'_>,
    ) -> Option<Ending> {
        if self.interest == Interest::NONE {
            // Watched for nothing (its chunk is with its work), yet
            // reported: the kernel reports an error or hang-up whatever the
            // interest, and level-triggered it would report it on every
            // wait until the work is done. The client is gone: close now.
            let e = self.stream.take_error().ok().flatten();
            return Some(Ending::Failed(
                e.unwrap_or_else(|| io::ErrorKind::ConnectionReset.into()),
            ));
        }
        if event.writable {
            if let Err(e) = self.flush(now, tally) {
                return Some(Ending::Failed(e));
            }
        }
        if event.readable && self.interest.read {
            if let Err(ending) = self.read_and_echo(buffer, now, plan, event.key, tally) {
                return Some(ending);
            }
        }
        self.settle(event.key, poller)
    }

    /// After any I/O: whether the connection is done, and otherwise the
    /// interest it needs now.
    fn settle(&mut self, key: usize, poller: &Poller) -> Option<Ending> {
        if self.read_closed && self.unsent.is_empty() && !self.working {
            // Half-closed and every byte delivered: done.
            return Some(Ending::Closed);
        }
        // Level-triggered interest only changes when the buffer crosses
        // empty or full: in steady ping-pong there is no epoll_ctl at all.
        let wanted = Interest {
            read: !self.read_closed && self.unsent.len() < MAX_UNSENT && !self.working,
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

    /// One `read()`, then echo what it brought (after its `--work`, if
    /// there is a plan).
    fn read_and_echo(
        &mut self,
        buffer: &mut [u8],
        now: Instant,
        plan: Option<&mut WorkPlan>,
        key: usize,
        tally: &Tally<'_>,
    ) -> Result<(), Ending> {
        let room = buffer.len().min(MAX_UNSENT - self.unsent.len());
        let n = match self.stream.read(&mut buffer[..room]) {
            Ok(0) => {
                self.read_closed = true;
                return Ok(());
            }
            Ok(n) => n,
            // A spurious wake-up: nothing to read after all.
            Err(e) if would_block(&e) => {
                tally.would_block.add(1);
                return Ok(());
            }
            Err(e) if interrupted(&e) => return Ok(()),
            // With nothing unsent, a reset is the client leaving, not
            // abandoning an echo.
            Err(e) if self.unsent.is_empty() => return Err(Ending::from_read_error(e)),
            Err(e) => return Err(Ending::Failed(e)),
        };
        self.last_active = now;
        tally.traffic.read(n);
        let data = &buffer[..n];
        crate::lab::crash::check(data);
        if let Some(plan) = plan {
            match plan.start((key, self.id), data, now) {
                Started::Done => {}
                // Echoed when its work is done; no reading meanwhile.
                Started::Held => {
                    self.held.extend_from_slice(data);
                    self.working = true;
                    return Ok(());
                }
                Started::Offloaded => {
                    self.working = true;
                    return Ok(());
                }
            }
        }
        self.echo(data, now, tally).map_err(Ending::Failed)
    }

    /// Echoes `data`: written at once if nothing is queued before it (the
    /// common case: no copy), queued otherwise.
    fn echo(&mut self, data: &[u8], now: Instant, tally: &Tally<'_>) -> io::Result<()> {
        if self.unsent.is_empty() {
            let written = write_some(&mut self.stream, data)?;
            self.visit.bytes += written as u64;
            tally.wrote(written, data.len());
            self.unsent.extend_from_slice(&data[written..]);
        } else {
            self.unsent.extend_from_slice(data);
            self.flush(now, tally)?;
        }
        Ok(())
    }

    /// Writes as much of `unsent` as the socket takes now.
    fn flush(&mut self, now: Instant, tally: &Tally<'_>) -> io::Result<()> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let written = write_some(&mut self.stream, &self.unsent)?;
        tally.wrote(written, self.unsent.len());
        self.unsent.drain(..written);
        self.visit.bytes += written as u64;
        if written > 0 {
            self.last_active = now;
        }
        Ok(())
    }
}
