//! The statemachine model: the notes' generator-based event loop, in Rust.
//!
//! In the notes, each client is a generator. It runs until it must wait,
//! yields what it waits for, and the loop resumes it only when that is ready:
//!
//! ```python
//! def handle_client(sock):
//!     while True:
//!         yield 'WAIT_READ', sock
//!         data = sock.recv(4096)
//!         if not data:
//!             break
//!         yield 'WAIT_WRITE', sock
//!         sock.sendall(data)
//!     sock.close()
//! ```
//!
//! Rust has no stable generators, so we write by hand what a compiler makes
//! of one: a state machine. Each point where the generator can be suspended
//! becomes a variant of an enum ([`EchoState`](echo::EchoState)), the locals that live across
//! a `yield` become its fields, and `next()` becomes [`Coroutine::resume`],
//! which runs until the task must wait and returns a [`Wait`]: the yielded
//! `('WAIT_READ', sock)`. A suspended task is nothing but that enum: no
//! stack, no thread. It is smaller than the generator, too: CPython keeps a
//! suspended generator's frame, so at `WAIT_READ` it still holds the `data`
//! of the last message; our `WaitRead` has no `data` at all. A task borrows
//! a buffer from the loop's [`BufferPool`](crate::serve::buffers::BufferPool) when its socket is readable and
//! gives it back once everything is written, so a client waiting to speak
//! holds no buffer.
//!
//! The [`EventLoop`] is the notes' `EventLoop`: a run queue of tasks ready to
//! resume, and a table of suspended tasks keyed by the socket they wait on.
//! It knows nothing about echoing: it resumes coroutines and registers what
//! they ask for. The acceptor (the notes' `run_server` generator) is a task
//! like any other, and spawns a task per client (`loop.create_task`).
//!
//! Two departures from the notes, both for correctness or cost: a task
//! tries its write before asking whether the socket is writable (a socket
//! almost always is, and asking first would cost a trip through epoll per
//! message); and a partial write is continued after `WAIT_WRITE` instead of
//! assuming `sendall` cannot block. A task may also yield a deadline with
//! its wait (the idle timeout), and is resumed with [`Resume::TimedOut`] if
//! it passes first.
//!
//! The loop is fair for the same reason the notes' is: a task reads once
//! per resume, then yields `WAIT_READ` again, even when more has arrived,
//! and the loop resumes it only at its next turn, after every task that was
//! ready before it. A client that sends without pause cannot keep its task
//! running: every message goes through the loop. (The async model's tasks
//! do not yield on their own when their socket stays ready, and need a
//! budget instead: see its executor.)
//!
//! Its limit is the selector's: one thread, so a task that computes for a
//! long time between two yields stalls every other task. Shutdown: one
//! more task, `Stopper`, waits to read the shutdown's bell (which a
//! signal rings) and triggers the shutdown; the loop sees the flag and
//! drops every task, deleting each socket from the poller first.
//!
//! Here: the loop and what a task yields; `echo.rs` the echo task;
//! `tasks.rs` the loop's own two tasks (the acceptor and the stopper);
//! `trace.rs` tells each resume in the notes' words for `--trace`.
//!
//! Next: `async`, where the compiler writes these state machines for us.
//!
//! Tutorial: `docs/tutorial/4-generators-are-state-machines.md`.

pub mod echo;
mod tasks;
mod trace;

use tasks::{Acceptor, Stopper};
use trace::trace_step;

pub use echo::run;

use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Context;
use super::accept::Visit;
use crate::lab::live::{Line, ReadyQueue, Traffic};
use crate::lab::meter::Meter;
use crate::lab::offload::{Finished, Job, Offload};
use crate::lab::trace::Trace;
use crate::lab::work::Work;
use crate::poller::{Events, Interest, Poller, Watchlist};

/// What a task yields when it cannot go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// `yield 'WAIT_READ', sock`: resume me when my socket is readable, or
    /// with [`Resume::TimedOut`] at `until`.
    Read {
        /// Give up waiting at this instant.
        until: Option<Instant>,
    },
    /// `yield 'WAIT_WRITE', sock`: resume me when my socket is writable, or
    /// with [`Resume::TimedOut`] at `until`.
    Write {
        /// Give up waiting at this instant.
        until: Option<Instant>,
    },
    /// Resume me when my socket is readable *or* writable, or at `until`:
    /// a task that listens and is owed bytes at once (the chat).
    ReadOrWrite {
        /// Give up waiting at this instant.
        until: Option<Instant>,
    },
    /// Resume me at this instant: the notes' `sleep`.
    Sleep(Instant),
    /// Run the job I hold ([`Coroutine::take_job`]) on the offload pool and
    /// resume me when it is done: `yield 'RUN_IN_EXECUTOR', job`.
    Offload,
    /// The generator returned (`StopIteration`): drop me.
    Done,
}

impl Wait {
    fn interest(self) -> Interest {
        match self {
            Wait::Read { .. } => Interest::READ,
            Wait::Write { .. } => Interest::WRITE,
            Wait::ReadOrWrite { .. } => Interest {
                read: true,
                write: true,
            },
            Wait::Sleep(_) | Wait::Offload | Wait::Done => Interest::NONE,
        }
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Read { until } | Wait::Write { until } | Wait::ReadOrWrite { until } => until,
            Wait::Sleep(at) => Some(at),
            Wait::Offload | Wait::Done => None,
        }
    }
}

/// Why a task is resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// What it waited for happened (the first resume also says `Ready`).
    Ready,
    /// Its deadline passed first.
    TimedOut,
    /// Another task woke it ([`Step::wake`]): something it holds changed.
    Woken,
}

/// What a task may do while it runs, besides returning its [`Wait`].
pub struct Step<'s, 'a> {
    me: usize,
    spawned: &'s mut Vec<Box<dyn Coroutine<'a> + 'a>>,
    woken: &'s mut Vec<usize>,
}

impl<'a> Step<'_, 'a> {
    /// This task's key in the loop: what other tasks pass to `wake`.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Creates a task: the notes' `loop.create_task`.
    pub fn spawn(&mut self, task: Box<dyn Coroutine<'a> + 'a>) {
        self.spawned.push(task);
    }

    /// Resumes task `key` with [`Resume::Woken`] soon, if it is suspended
    /// on its socket or a deadline (not if it is queued already, running,
    /// or with the offload pool).
    pub fn wake(&mut self, key: usize) {
        self.woken.push(key);
    }
}

/// A hand-written generator: the loop's only view of a task.
pub trait Coroutine<'a> {
    /// Runs until the task must wait again.
    fn resume(&mut self, how: Resume, step: &mut Step<'_, 'a>) -> Wait;
    /// The socket this task waits on.
    fn source(&self) -> BorrowedFd<'_>;
    /// The work and the chunk for the pool, after the task yielded
    /// [`Wait::Offload`].
    fn take_job(&mut self) -> Option<(Work, Vec<u8>)> {
        None
    }
    /// What the notes call the generator, for `--trace`.
    fn name(&self) -> &'static str {
        "handle_client"
    }
}

/// Runs the loop with the stopper and an acceptor that makes a task of
/// each client with `client`, until shutdown. The chat's loop is this one
/// with another kind of client task. The tasks count into `traffic`, and
/// `more` adds the protocol's own fields to each `--stats` line. `fatal` is
/// where the acceptor leaves the error of a broken listener (it lives as
/// long as the tasks).
///
/// # Errors
/// If the poller fails or the listener breaks.
pub fn serve<'a>(
    listener: &'a TcpListener,
    ctx: &'a Context,
    traffic: &'a Traffic,
    more: impl Fn(&mut Line) + 'a,
    fatal: &'a Cell<Option<io::Error>>,
    client: impl FnMut(TcpStream, Visit<'a>) -> Box<dyn Coroutine<'a> + 'a> + 'a,
) -> io::Result<()> {
    let mut event_loop = EventLoop::new(ctx, traffic, Box::new(more))?;
    event_loop.create_task(Box::new(Stopper {
        bell: ctx.shutdown.bell()?,
        shutdown: &ctx.shutdown,
        listening: false,
    }));
    event_loop.create_task(Box::new(Acceptor {
        listener,
        ctx,
        client: Box::new(client),
        traffic,
        fatal,
    }));
    let result = event_loop.run();
    event_loop.drop_every_task();
    event_loop.report(Instant::now(), true);
    match fatal.take() {
        Some(e) => Err(e),
        None => result,
    }
}

/// A task in the loop's table, and what it is suspended on.
struct Slot<'a> {
    task: Box<dyn Coroutine<'a> + 'a>,
    /// What the task yielded last; `None` while it sits in the run queue.
    waiting: Option<Wait>,
    /// The ticket of its job on the offload pool, while it has one.
    job: Option<u64>,
}

impl AsFd for Slot<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.task.source()
    }
}

/// The notes' `EventLoop`: a run queue, a table of suspended tasks, and the
/// poller that says which of them may resume.
pub struct EventLoop<'a> {
    /// The tasks, each watched by the poller while it waits for its socket.
    tasks: Watchlist<Slot<'a>>,
    /// Tasks ready to resume, and why (the notes' `tasks_to_run`).
    run_queue: VecDeque<(usize, Resume)>,
    /// Deadlines of suspended tasks, earliest first.
    timers: BTreeSet<(Instant, usize)>,
    /// Tasks created by the task being resumed, reused to avoid allocation.
    spawned: Vec<Box<dyn Coroutine<'a> + 'a>>,
    /// Tasks the task being resumed woke, likewise.
    woken: Vec<usize>,
    /// With `--offload`: the pool, and where it says a job is done, by
    /// (task key, ticket).
    pool: Option<(Offload, Finished<(usize, u64)>)>,
    /// The ticket of the next job: a task's key is reused after it ends,
    /// a ticket never is.
    next_ticket: u64,
    /// Stalls past `--slow-handler`; turns and lines for `--stats`.
    meter: Meter<'a>,
    /// What the run queue did since the last line.
    queue: ReadyQueue,
    traffic: &'a Traffic,
    /// The protocol's own `--stats` fields.
    more: Box<dyn Fn(&mut Line) + 'a>,
    /// Offloaded jobs come back since the last line, each a wake-up from
    /// a pool thread.
    cross_wakeups: u64,
    /// `--trace`: each task's life in the notes' words.
    trace: Trace,
    ctx: &'a Context,
}

impl<'a> EventLoop<'a> {
    fn new(
        ctx: &'a Context,
        traffic: &'a Traffic,
        more: Box<dyn Fn(&mut Line) + 'a>,
    ) -> io::Result<Self> {
        let poller = Arc::new(Poller::new(ctx.config.poller)?);
        let pool = match (ctx.config.work, ctx.config.offload) {
            (Some(work), threads) if work.blocks() && threads > 0 => Some((
                Offload::start(ctx, threads, "statemachine")?,
                Finished::new(poller.clone()),
            )),
            _ => None,
        };
        Ok(EventLoop {
            tasks: Watchlist::new(poller),
            run_queue: VecDeque::new(),
            timers: BTreeSet::new(),
            spawned: Vec::new(),
            woken: Vec::new(),
            pool,
            next_ticket: 0,
            meter: Meter::new(ctx, "statemachine"),
            queue: ReadyQueue::default(),
            traffic,
            more,
            cross_wakeups: 0,
            trace: Trace::new(ctx.config.trace),
            ctx,
        })
    }

    /// Queues task `key` to resume, and how: the notes' `tasks_to_run`.
    fn ready(&mut self, key: usize, how: Resume) {
        self.queue.wakes += 1;
        self.run_queue.push_back((key, how));
    }

    /// One `--stats` line: traffic, turns, tasks and the run queue.
    fn report(&mut self, now: Instant, last: bool) {
        let tasks = self.tasks.len() as u64;
        let timers = self.timers.len() as u64;
        let (queue, more) = (&mut self.queue, &self.more);
        let cross_wakeups = std::mem::take(&mut self.cross_wakeups);
        // The stopper and the acceptor are tasks too.
        let open = tasks.saturating_sub(2);
        self.meter.report(now, last, self.traffic, open, |line| {
            line.gauge("tasks", tasks)
                .gauge("timers", timers)
                .count("cross_wakeups", cross_wakeups);
            queue.fill(line);
            more(line);
        });
    }

    /// The notes' `create_task`: queue a new task to run to its first yield.
    fn create_task(&mut self, task: Box<dyn Coroutine<'a> + 'a>) {
        let name = task.name();
        let key = self.tasks.insert(Slot {
            task,
            waiting: None,
            job: None,
        });
        self.trace.task(
            key,
            format_args!("{name}: created, a generator object: none of its code has run"),
        );
        self.ready(key, Resume::Ready);
    }

    /// Resume ready tasks, wait for the kernel, mark tasks ready, repeat.
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::new();
        loop {
            self.queue.turn(self.run_queue.len());
            while let Some((key, how)) = self.run_queue.pop_front() {
                self.step(key, how)?;
            }
            // Checked after the tasks ran: one of them (the Stopper) may
            // have triggered the shutdown, and nothing would wake the wait.
            if self.ctx.shutdown.is_triggered() {
                return Ok(());
            }
            self.meter.waiting();
            let ready = self.tasks.poller().wait(&mut events, self.timeout())?;
            let now = Instant::now();
            self.meter.woke(now, ready);
            for event in events.iter() {
                let Some(slot) = self.tasks.get_mut(event.key) else {
                    continue;
                };
                // Error and hang-up conditions come as both readable and
                // writable, so the task's next call sees them.
                let until = match slot.waiting {
                    Some(Wait::Read { until }) if event.readable => until,
                    Some(Wait::Write { until }) if event.writable => until,
                    Some(Wait::ReadOrWrite { until }) => until,
                    // Watched for nothing, yet reported: an error or a
                    // hang-up, which the kernel reports whatever the
                    // interest, and level-triggered on every wait. Stop
                    // watching; the task meets the error when it resumes.
                    Some(Wait::Sleep(_) | Wait::Offload) => {
                        self.tasks.unwatch(event.key);
                        continue;
                    }
                    _ => continue,
                };
                slot.waiting = None;
                if let Some(at) = until {
                    self.timers.remove(&(at, event.key));
                }
                self.ready(event.key, Resume::Ready);
            }
            self.finish_jobs();
            self.expire_timers(now);
            if self.meter.due(now) {
                self.report(now, false);
            }
        }
    }

    /// Queues the tasks whose offloaded job is done. The pool rang the
    /// poller for each, so the loop woke up for them.
    fn finish_jobs(&mut self) {
        let Some((_, finished)) = &self.pool else {
            return;
        };
        // The task kept its own chunk; the pool's copy is dropped here.
        let done: Vec<(usize, u64)> = finished.take().map(|(token, _copy)| token).collect();
        self.cross_wakeups += done.len() as u64;
        for (key, ticket) in done {
            if let Some(slot) = self.tasks.get_mut(key) {
                if slot.waiting == Some(Wait::Offload) && slot.job == Some(ticket) {
                    slot.waiting = None;
                    slot.job = None;
                    self.ready(key, Resume::Ready);
                }
            }
        }
    }

    /// Resumes one task and files it under what it yields.
    fn step(&mut self, key: usize, how: Resume) -> io::Result<()> {
        let Some(slot) = self.tasks.get_mut(key) else {
            return Ok(());
        };
        self.queue.polls += 1;
        let mut step = Step {
            me: key,
            spawned: &mut self.spawned,
            woken: &mut self.woken,
        };
        let wait = slot.task.resume(how, &mut step);
        if self.trace.is_on() {
            trace_step(&self.trace, key, &self.tasks, how, wait);
        }
        while let Some(task) = self.spawned.pop() {
            self.create_task(task);
        }
        let mut woken = std::mem::take(&mut self.woken);
        for other in woken.drain(..) {
            self.wake(other);
        }
        self.woken = woken;
        if wait == Wait::Done {
            self.remove(key);
            return Ok(());
        }
        let slot = &mut self.tasks[key];
        slot.waiting = Some(wait);
        if wait == Wait::Offload {
            match (&self.pool, slot.task.take_job()) {
                (Some((pool, finished)), Some((work, data))) => {
                    let ticket = self.next_ticket;
                    self.next_ticket += 1;
                    slot.job = Some(ticket);
                    pool.submit(Job {
                        work,
                        data,
                        done: finished.notifier((key, ticket)),
                    });
                }
                // Nothing to run: resume it at once.
                _ => {
                    slot.waiting = None;
                    self.ready(key, Resume::Ready);
                    return Ok(());
                }
            }
        }
        let interest = wait.interest();
        // Sockets stay registered while a task lives (level-triggered), so
        // the common resume-and-wait-for-read again costs no syscall.
        if let Err(e) = self.tasks.watch(key, interest) {
            // epoll_ctl fails only when the kernel is out of memory or
            // watches: the loop cannot do its job any more.
            self.remove(key);
            return Err(e);
        }
        if let Some(at) = wait.deadline() {
            self.timers.insert((at, key));
        }
        Ok(())
    }

    /// Queues a suspended task to resume as [`Resume::Woken`].
    fn wake(&mut self, key: usize) {
        let Some(slot) = self.tasks.get_mut(key) else {
            return;
        };
        match slot.waiting {
            // Queued or running already, or its job is out: it will look.
            None | Some(Wait::Offload | Wait::Done) => {}
            Some(wait) => {
                if let Some(at) = wait.deadline() {
                    self.timers.remove(&(at, key));
                }
                slot.waiting = None;
                self.ready(key, Resume::Woken);
            }
        }
    }

    /// Deletes a task's socket from the poller, then drops the task.
    fn remove(&mut self, key: usize) {
        let slot = self.tasks.remove(key);
        if let Some(at) = slot.waiting.and_then(Wait::deadline) {
            self.timers.remove(&(at, key));
        }
    }

    /// Until the earliest deadline, or forever.
    fn timeout(&self) -> Option<Duration> {
        if !self.run_queue.is_empty() {
            return Some(Duration::ZERO);
        }
        let timer = self.timers.first().map(|&(at, _)| at);
        super::readiness::deadlines::until_earliest([timer, self.meter.deadline()])
    }

    /// Queues every task whose deadline has passed, to resume as timed out.
    fn expire_timers(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(slot) = self.tasks.get_mut(key) {
                slot.waiting = None;
                self.ready(key, Resume::TimedOut);
            }
        }
    }

    fn drop_every_task(&mut self) {
        let keys: Vec<usize> = self.tasks.keys().collect();
        for key in keys {
            let name = self.tasks[key].task.name();
            self.trace.task(
                key,
                format_args!(
                    "{name}: close() at shutdown: dropped at its yield, its socket closes"
                ),
            );
            self.remove(key);
        }
    }
}
