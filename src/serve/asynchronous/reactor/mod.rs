//! The reactor: the half of a runtime that talks to the kernel. It turns
//! epoll readiness into [`Waker::wake`] calls, and expired timers too.
//!
//! A socket is wrapped in [`Async`]. The reactor remembers per socket
//! whether it is known to be readable and writable; an I/O future tries its
//! call while that flag is set, and when the kernel says `WouldBlock` the
//! future clears the flag, leaves its waker with the socket, and returns
//! `Pending`. The next readiness event sets the flag and wakes that waker.
//!
//! Registrations are edge-triggered, as mio's are, where the backend
//! reports a half-close with the data (`--poller epoll`, `poll`): a socket
//! is added once for both directions and never touched again, and a wait
//! reports only what changed. The selector and the statemachine loop use
//! the level-triggered kind, which reports a socket for as long as it is
//! ready; that costs the kernel a second look at every socket it reported,
//! at the next wait, once per message (docs/performance.md measures it).
//! Edges ask more of us instead: readiness is remembered here until a call
//! says `WouldBlock`, nothing spins when nobody waits (an edge comes
//! once), and a hang-up is remembered for good. That last one matters
//! because of the short-read shortcut in [`Async::recv`]: a read that
//! returns less than asked forgets readiness without the read that would
//! say `WouldBlock`, and a FIN that arrived with the last data raises no
//! edge of its own; the event that reported the data already said
//! `read_closed`. On `polling`, the default, which cannot say that, the
//! reactor registers level-triggered instead, and watches only what a
//! task will act on: `level.rs`, the performance part, says why and how.
//!
//! In asyncio's terms this is the selector half of the event loop
//! (`add_reader`/`add_writer`) plus `call_later`'s timer heap.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::{Future, poll_fn};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroU64;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::lab::trace::Trace;
use crate::net::{self, Blocking, interrupted, would_block};
use crate::poller::{Backend, Event, Events, Interest, Poller, Registration};
use crate::serve::buffers::{BufferPool, Lease, TASK_BUFFER_SIZE};

use crate::serve::DEFAULT_BUDGET;

/// The kernel side of the runtime: one poller, the registered sockets, the
/// pending timers, and the read buffers lent to tasks that hold data.
pub struct Reactor {
    /// Every socket in `sources` is registered here (edge-triggered, or
    /// level-triggered on `polling`) under its slab key, by the
    /// [`Registration`] its [`Async`] holds, which deletes it before the
    /// socket closes. Shared with the executor's wakers only to `notify`
    /// it.
    poller: Arc<Poller>,
    /// What is known of each registered socket, by key, held here and
    /// nowhere else: an [`Async`] keeps only the socket and its
    /// registration. An entry lives exactly as long as its `Async`; an
    /// event whose key is vacant is stale and ignored.
    sources: RefCell<Slab<Source>>,
    /// Pending timers by deadline, earliest first; the id makes equal
    /// deadlines distinct. A `Sleep` that is dropped removes its own entry,
    /// so every waker here belongs to a future still alive.
    timers: RefCell<BTreeMap<(At, NonZeroU64), Waker>>,
    /// When the reactor was made: what an [`At`] counts from.
    epoch: Instant,
    /// The id of the next timer; never reused.
    next_timer_id: Cell<NonZeroU64>,
    /// The buffer `wait` fills; borrowed only inside `wait`, never across
    /// a wake-up, so no task can see it mid-dispatch.
    events: RefCell<Events>,
    /// Read buffers lent to tasks while they hold data (see
    /// [`BufferPool`]).
    buffers: BufferPool,
    /// The cooperative budget of the task being polled: how many more I/O
    /// operations it may complete before it must yield.
    budget: Budget,
    /// `--trace`: the executor's lines, and the tasks' own (kept here
    /// because every task holds the reactor).
    trace: Trace,
    /// Operations that met `WouldBlock` since the last `--stats` line:
    /// each a system call that found nothing to do.
    would_block: Cell<u64>,
    /// Sockets are registered level-triggered (`level.rs` says why and
    /// when): the backend cannot report a half-close with the data.
    level: bool,
    /// The last wait could sleep (tasks were not waiting to run).
    could_sleep: Cell<bool>,
}

impl AsRef<Poller> for Reactor {
    fn as_ref(&self) -> &Poller {
        &self.poller
    }
}

impl Reactor {
    /// A reactor with a fresh poller.
    ///
    /// # Errors
    /// If the poller cannot be created.
    pub fn new(backend: Backend) -> io::Result<Rc<Reactor>> {
        let poller = Poller::new(backend)?;
        Ok(Rc::new(Reactor {
            level: !poller.reports_read_closed(),
            could_sleep: Cell::new(true),
            poller: Arc::new(poller),
            sources: RefCell::new(Slab::new()),
            timers: RefCell::new(BTreeMap::new()),
            epoch: Instant::now(),
            next_timer_id: Cell::new(NonZeroU64::MIN),
            events: RefCell::new(Events::new()),
            buffers: BufferPool::new(),
            budget: Budget {
                per_poll: Cell::new(Some(DEFAULT_BUDGET)),
                left: Cell::new(DEFAULT_BUDGET),
            },
            trace: Trace::new(false),
            would_block: Cell::new(0),
        }))
    }

    /// Whether sockets are registered level-triggered (on `polling`; see
    /// `level.rs`).
    pub fn is_level(&self) -> bool {
        self.level
    }

    /// Sets the cooperative budget: at most `per_poll` I/O operations per
    /// poll of a task; 0 turns the budget off (`serve --budget`).
    pub fn set_budget(&self, per_poll: u32) {
        self.budget.per_poll.set((per_poll > 0).then_some(per_poll));
        self.budget.left.set(per_poll);
    }

    /// Operations that met `WouldBlock` since the last call.
    pub fn take_would_block(&self) -> u64 {
        self.would_block.take()
    }

    /// The `--trace` of this runtime's tasks.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The budget the executor refills before each poll.
    pub(super) fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The poller, so that another thread can interrupt a wait with
    /// `notify()`.
    pub fn poller(&self) -> &Arc<Poller> {
        &self.poller
    }

    /// Timers pending right now.
    pub fn timers(&self) -> usize {
        self.timers.borrow().len()
    }

    /// Sockets registered right now.
    pub fn sources(&self) -> usize {
        self.sources.borrow().len()
    }

    /// Blocks until a registered socket becomes ready, a timer is due,
    /// `timeout` passes or `notify()` is called; returns how many sockets
    /// are ready. Call [`Reactor::dispatch`] next to wake the tasks
    /// concerned.
    ///
    /// # Errors
    /// If `epoll_wait` fails.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<usize> {
        let until_timer = self
            .timers
            .borrow()
            .first_key_value()
            .map(|(&(at, _), _)| at.from(self.now()));
        let timeout = match (timeout, until_timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.could_sleep.set(timeout != Some(Duration::ZERO));
        self.poller.wait(&mut self.events.borrow_mut(), timeout)
    }

    /// Wakes every task waiting for what the last [`Reactor::wait`] saw:
    /// sockets that became ready, timers that are due.
    pub fn dispatch(&self) {
        // Waking only queues a task (no task runs here), so the table can
        // stay borrowed.
        let sources = self.sources.borrow();
        for event in self.events.borrow().iter() {
            // A source removed earlier has no entry: a stale event.
            let Some(source) = sources.get(event.key) else {
                continue;
            };
            if event.read_closed {
                source.mark(READ_CLOSED, true);
            }
            let woke_reader = event.readable && source.wake(Direction::Read);
            if event.writable {
                source.wake(Direction::Write);
            }
            if self.level {
                self.settle_level(source, &event, woke_reader);
            }
        }
        drop(sources);
        self.fire_timers(self.now());
    }

    /// Wakes every timer whose instant has come, earliest first.
    fn fire_timers(&self, now: At) {
        loop {
            let mut timers = self.timers.borrow_mut();
            let Some(entry) = timers.first_entry() else {
                return;
            };
            if entry.key().0 > now {
                return;
            }
            let waker = entry.remove();
            drop(timers);
            waker.wake();
        }
    }

    fn add_timer(&self, at: At, waker: Waker) -> NonZeroU64 {
        let id = self.next_timer_id.get();
        self.next_timer_id.set(id.saturating_add(1));
        self.timers.borrow_mut().insert((at, id), waker);
        id
    }
}

/// A non-blocking socket registered with a [`Reactor`], whose operations
/// are futures.
pub struct Async<T: AsFd> {
    /// The socket, registered with the reactor's poller under the key of
    /// its [`Source`] in the reactor's table, for as long as it lives.
    io: Registration<T, Rc<Reactor>>,
}

impl<T: AsFd> Async<T> {
    /// Registers `io`, which must already be in non-blocking mode.
    ///
    /// # Errors
    /// If the poller refuses the socket.
    pub fn new(io: T, reactor: &Rc<Reactor>) -> io::Result<Async<T>> {
        Self::register(io, reactor, false)
    }

    /// Registers `io`; with `assume_ready`, its first operations are tried
    /// before any readiness is reported.
    fn register(io: T, reactor: &Rc<Reactor>, assume_ready: bool) -> io::Result<Async<T>> {
        let mut sources = reactor.sources.borrow_mut();
        let entry = sources.vacant_entry();
        let (key, owner) = (entry.key(), reactor.clone());
        let io = match reactor.level {
            true => Registration::new(owner, io, key, Interest::READ)?,
            false => Registration::edge_triggered(owner, io, key)?,
        };
        entry.insert(Source {
            // Registering reports whatever is ready already.
            known: Cell::new(match assume_ready {
                true => READABLE | WRITABLE | WATCH_READ,
                false => WATCH_READ,
            }),
            // Removed with the registration, in `Drop for Async`.
            watched: io.handle(),
            reader: Waiter::default(),
            writer: Waiter::default(),
        });
        Ok(Async { io })
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The reactor it is registered with.
    fn reactor(&self) -> &Reactor {
        self.io.owner()
    }

    /// Runs `f` on this socket's registration. (The table is borrowed only
    /// for `f`: nothing in it runs a task or touches the table.)
    fn source<R>(&self, f: impl FnOnce(&Source) -> R) -> R {
        f(&self.reactor().sources.borrow()[self.io.key()])
    }

    /// Waits until the poller reports the socket readable, reading nothing:
    /// asyncio's `add_reader`, as a future. Completes at once if a read
    /// found it readable before and no read since said `WouldBlock`.
    ///
    /// # Errors
    /// If the poller refuses to watch the socket.
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_io(cx, Direction::Read, |_| Ok(()))).await
    }

    /// Runs `op` while the socket is known to be ready in `direction`;
    /// on `WouldBlock`, forgets that readiness and waits for the poller to
    /// report it again. A task whose [`Budget`] is spent gets `Pending`
    /// with its waker already woken: it yields, and runs again after the
    /// others (the readiness it knew of is kept).
    fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        let budget = &self.reactor().budget;
        if !budget.allows() {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            if !self.source(|source| source.ready_or_wait(direction, cx.waker())) {
                return Poll::Pending;
            }
            match op(&self.io) {
                Err(e) if would_block(&e) => {
                    let reactor = self.reactor();
                    reactor.would_block.set(reactor.would_block.get() + 1);
                    self.not_ready(direction);
                }
                Err(e) if interrupted(&e) => {}
                result => {
                    budget.spend();
                    return Poll::Ready(result);
                }
            }
        }
    }
}

impl<T: AsFd> Async<T> {
    /// Forgets that the socket is ready in `direction`: the next operation
    /// waits for the poller to report it again, which edge-triggered needs
    /// a new edge for. (The `poll` backend emulates edges and is told here
    /// to watch the direction again; the others need no call.)
    fn not_ready(&self, direction: Direction) {
        self.source(|source| {
            source.mark(direction.ready(), false);
            if self.reactor().level {
                self.reactor().watch_again(source, self.io.key(), direction);
            }
        });
        let interest = match direction {
            Direction::Read => Interest::READ,
            Direction::Write => Interest::WRITE,
        };
        self.reactor().poller.rearm(&self.io, interest);
    }
}

impl<T: AsFd> Drop for Async<T> {
    fn drop(&mut self) {
        // The registration is deleted after this, as `io` is dropped.
        let sources = &self.reactor().sources;
        sources.borrow_mut().try_remove(self.io.key());
    }
}

impl Async<TcpListener> {
    /// Accepts a client: the notes' `loop.sock_accept(sock)`.
    ///
    /// # Errors
    /// As `accept(2)`, never `WouldBlock`.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        poll_fn(|cx| self.poll_io(cx, Direction::Read, |l| net::accept(l, Blocking::No))).await
    }
}

impl Async<TcpStream> {
    /// Registers a client just accepted, non-blocking, whose first read and
    /// write are tried at once, as asyncio's `sock_recv` tries `recv`
    /// before it registers a reader: a new client has usually sent
    /// already, and its first message is then read with no wait. A wrong
    /// guess costs one `WouldBlock`. (Not for [`Async::readable`], which
    /// tries nothing and would believe the guess.)
    ///
    /// # Errors
    /// If the poller refuses the socket.
    pub fn accepted(stream: TcpStream, reactor: &Rc<Reactor>) -> io::Result<Async<TcpStream>> {
        Self::register(stream, reactor, true)
    }

    /// Waits for data and returns what has arrived, at most
    /// [`TASK_BUFFER_SIZE`] bytes: the notes' `loop.sock_recv(sock, 4096)`.
    /// Empty means the peer closed its side. Like Python's `bytes`, the
    /// data exists only once it has arrived: the buffer is borrowed from
    /// the reactor when the socket is readable, not held while waiting,
    /// and goes back when the returned [`Lease`] is dropped.
    ///
    /// # Errors
    /// As `read(2)` (a reset, for instance), never `WouldBlock`.
    pub fn recv(&self) -> impl Future<Output = io::Result<Lease<'_>>> {
        poll_fn(move |cx| {
            let result = self.poll_io(cx, Direction::Read, |mut s| {
                let mut data = self.reactor().buffers.lend();
                let n = s.read(&mut data)?;
                data.truncate(n);
                Ok(data)
            });
            // A read that did not fill the buffer emptied the socket: the
            // next read would say WouldBlock, so skip it and wait for the
            // poller. Saves one syscall per message. Safe because data that
            // arrives after this read raises a new edge, and an end of
            // stream that arrived before it was reported with the data.
            // (Edge-triggered on a backend that cannot report an end of
            // stream with the data, we must read until WouldBlock, or we
            // would miss it; level-triggered, the next wait reports it.)
            if let Poll::Ready(Ok(data)) = &result {
                if !data.is_empty()
                    && data.len() < TASK_BUFFER_SIZE
                    && !self.source(|source| source.is(READ_CLOSED))
                    && (self.reactor().level || self.reactor().poller.reports_read_closed())
                {
                    self.not_ready(Direction::Read);
                }
            }
            result
        })
    }

    /// One `write()` of `buf` if the socket is known to be writable;
    /// otherwise leaves the task's waker for the next write readiness.
    /// For futures that write from a buffer they do not own across
    /// polls (the chat's outbox).
    ///
    /// # Errors
    /// As `write(2)`, never `WouldBlock`.
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_io(cx, Direction::Write, |mut s| s.write(buf))
    }

    /// Writes all of `buf`, waiting for room as often as needed: the notes'
    /// `loop.sock_sendall(sock, data)`, without assuming it cannot block.
    ///
    /// # Errors
    /// As `write(2)` (a broken pipe, for instance).
    pub fn write_all<'b>(&'b self, buf: &'b [u8]) -> impl Future<Output = io::Result<()>> + 'b {
        // One `poll_fn` rather than an `async fn` looping over `poll_write`:
        // its state is the two references and nothing else (24 bytes,
        // where the `async fn` kept its arguments twice: 80).
        let mut rest = buf;
        poll_fn(move |cx| {
            while !rest.is_empty() {
                match self.poll_write(cx, rest) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => rest = &rest[n..],
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(Ok(()))
        })
    }
}

mod budget;
mod level;
mod source;
mod timers;

pub(super) use budget::Budget;
use source::{Direction, READ_CLOSED, READABLE, Source, WATCH_READ, WATCH_WRITE, WRITABLE, Waiter};

use timers::At;
pub use timers::{Sleep, TimedOut, Timeout, sleep, timeout};

#[cfg(test)]
mod tests;
