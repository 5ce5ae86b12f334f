//! The executor: the half of a runtime that runs tasks. A task is a boxed
//! future; the executor polls it when it is woken, and the reactor is what
//! wakes it.
//!
//! The pieces, with their asyncio counterparts:
//! - [`Executor::spawn`] is `loop.create_task`: box the future, give it a
//!   waker, queue it to run.
//! - The ready queue is `loop._ready`; waking a task is `call_soon(task.__step)`.
//! - Polling a task once is `Task.__step`: run the coroutine until it awaits
//!   something not ready, which returns `Pending` after leaving the task's
//!   waker where the awaited event will find it (`add_done_callback`).
//! - [`Executor::block_on`] is `run_until_complete`: run ready tasks; when
//!   none is ready, block in the reactor until something happens.
//!
//! A waker is two numbers and nothing else: the executor's and the task's,
//! packed in the one word a [`RawWaker`] carries. Making, cloning and
//! dropping one allocates nothing and counts no reference, so a task costs
//! its future and no more (tokio's and async-task's wakers point at the
//! task's own allocation instead, which takes reference counts and more
//! `unsafe`). Waking looks the numbers up: on the executor's own thread,
//! while it runs, the task id goes straight into its ready queue; from any
//! other thread (an offload pool's), into the executor's inbox, found by
//! its number in a global table (`INBOXES`), and `Poller::notify()`
//! interrupts the wait. A waker that outlives its task wakes whatever task
//! has its number next, or none: a spurious wake, which every future must
//! take in its stride.
//!
//! Fairness comes from two bounds. A task may complete only so many I/O
//! operations per poll (the reactor's cooperative budget, `--budget`):
//! then its `await` answers `Pending`, it wakes itself, and it runs again in
//! the next tick, behind every task that was ready before it. And a tick
//! polls at most `POLLS_PER_TICK` tasks before the executor asks the
//! reactor what else became ready, so readiness is heard even while the
//! ready queue never empties. Without the budget, a client that sends
//! without pause keeps its task's `recv` and `write_all` completing at
//! once, the task never suspends, and every other client waits for as long
//! as that client keeps sending (chapter 5 shows it).
//!
//! One exception to "ask the reactor after every tick": tasks spawned
//! during a tick in which nothing else was woken run at once, before the
//! reactor is asked. They are new clients, whose first message is usually
//! there already (their socket is read before any readiness is reported:
//! [`Async::accepted`](super::reactor::Async::accepted)); a burst of
//! connections is echoed without a wait between accepting and reading.
//! Never twice in a row: at most one extra tick between two waits.
//!
//! A production runtime would add work stealing across threads and join
//! handles.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use slab::Slab;

use super::reactor::Reactor;
use crate::lab::live::{Line, ReadyQueue as ReadyQueueStats, Traffic};
use crate::lab::meter::Meter;
use std::time::Instant;

type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// The id the future given to [`Executor::block_on`] is woken with; task
/// ids are below it.
const MAIN: usize = u32::MAX as usize;

/// Task polls per tick at most, before the executor asks the reactor
/// (without blocking) what became ready. A tick already polls only the
/// tasks that were ready when it began; this bounds it when thousands are
/// (tokio checks for I/O every 61 polls). With the cooperative budget it
/// bounds how long readiness can go unheard: 128 polls of at most
/// [`DEFAULT_BUDGET`](crate::serve::DEFAULT_BUDGET) operations each.
const POLLS_PER_TICK: usize = 128;

/// Runs futures on this thread until the one given to `block_on` completes.
/// Tasks may borrow anything that outlives `'a`; any still running when the
/// executor is dropped are dropped with it (cancelled).
pub struct Executor<'a> {
    reactor: Rc<Reactor>,
    /// The tasks by id; a task is `None` while it is being polled.
    tasks: RefCell<Slab<Option<Task<'a>>>>,
    spawner: Spawner<'a>,
    /// This executor's number in [`INBOXES`], the first half of its
    /// wakers.
    number: u32,
    /// Where wakes on this thread queue tasks.
    ready: Rc<RefCell<ReadyQueue>>,
    /// Where wakes from other threads do.
    inbox: Arc<Inbox>,
    /// The ids taken from the ready queue for one tick (kept to reuse its
    /// memory).
    tick: RefCell<VecDeque<usize>>,
    /// Stalls past `--slow-handler`; ticks and lines for `--stats`, with
    /// the traffic the tasks count into and what the protocol adds.
    meter: RefCell<Option<Metered<'a>>>,
    /// The ready queue's length at each tick, and polls per wake.
    queue: RefCell<ReadyQueueStats>,
    /// With `--trace`: tasks spawned and not yet polled, so that their
    /// first poll is told apart from a wake.
    fresh: RefCell<HashSet<usize>>,
}

/// A meter, and what its lines show besides the executor's own fields.
struct Metered<'a> {
    meter: Meter<'a>,
    traffic: &'a Traffic,
    more: Box<dyn Fn(&mut Line) + 'a>,
}

/// A handle that spawns tasks onto an [`Executor`] from inside its tasks.
#[derive(Clone)]
pub struct Spawner<'a> {
    new_tasks: Rc<RefCell<Vec<Task<'a>>>>,
}

impl<'a> Spawner<'a> {
    /// Queues `future` as a new task: the notes' `loop.create_task`.
    pub fn spawn(&self, future: impl Future<Output = ()> + 'a) {
        self.new_tasks.borrow_mut().push(Box::pin(future));
    }
}

/// Task ids to be polled, in the order they were woken, each at most once.
/// Only the executor's thread touches it, so it needs no lock.
#[derive(Default)]
struct ReadyQueue {
    ids: VecDeque<usize>,
    /// By task id: already in `ids`, so waking it again changes nothing.
    queued: Vec<bool>,
    /// The same, for [`MAIN`].
    main_queued: bool,
}

impl ReadyQueue {
    fn queued(&mut self, id: usize) -> &mut bool {
        if id == MAIN {
            return &mut self.main_queued;
        }
        if id >= self.queued.len() {
            self.queued.resize(id + 1, false);
        }
        &mut self.queued[id]
    }

    fn push(&mut self, id: usize) {
        let queued = self.queued(id);
        if !*queued {
            *queued = true;
            self.ids.push_back(id);
        }
    }

    /// The task is about to be polled: a wake from now on queues it again.
    fn unqueue(&mut self, id: usize) {
        *self.queued(id) = false;
    }
}

/// Task ids woken from other threads, until the executor moves them into
/// its ready queue at its next tick.
struct Inbox {
    ids: Mutex<Vec<usize>>,
    /// Set while the executor blocks in the reactor: only then must a wake
    /// interrupt it.
    sleeping: AtomicBool,
    reactor_poller: Arc<crate::poller::Poller>,
    /// Wakes that had to interrupt the wait, for `--stats`.
    notified: AtomicU64,
}

impl Inbox {
    fn push(&self, id: usize) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
        if self.sleeping.load(Ordering::SeqCst) {
            self.notified.fetch_add(1, Ordering::Relaxed);
            let _ = self.reactor_poller.notify();
        }
    }

    fn is_empty(&self) -> bool {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// Every executor's inbox, by executor number: how a waker used on another
/// thread finds where to go.
static INBOXES: Mutex<Slab<Arc<Inbox>>> = Mutex::new(Slab::new());

thread_local! {
    /// The executor running `block_on` on this thread, if any: its number
    /// and its ready queue.
    static RUNNING: RefCell<Option<(u32, Rc<RefCell<ReadyQueue>>)>> =
        const { RefCell::new(None) };
}

// A waker's word holds two 32-bit numbers.
const _: () = assert!(usize::BITS == 64, "wakers pack two u32s in a usize");

/// The waker of task `id` (or [`MAIN`]) of executor `number`.
fn task_waker(number: u32, id: usize) -> Waker {
    let word = (number as usize) << 32 | id;
    // SAFETY: the functions of `VTABLE` treat the pointer as a number and
    // never dereference it, so every copy is valid on any thread, for ever.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::without_provenance(word), &VTABLE)) }
}

/// What our wakers do: cloning copies the word, waking queues the task
/// (by value or by reference alike), dropping has nothing to release.
static VTABLE: RawWakerVTable =
    RawWakerVTable::new(|word| RawWaker::new(word, &VTABLE), wake, wake, |_| {});

/// Queues the task a waker's word names, wherever its executor is.
fn wake(word: *const ()) {
    let word = word.addr();
    let (number, id) = ((word >> 32) as u32, word & 0xffff_ffff);
    if !wake_here(number, id) {
        let inbox = INBOXES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(number as usize)
            .cloned();
        // None: the executor is gone, and its tasks with it.
        if let Some(inbox) = inbox {
            inbox.push(id);
        }
    }
}

/// Queues task `id` if executor `number` is running on this thread (and
/// not using its queue at this instant); returns whether it did.
fn wake_here(number: u32, id: usize) -> bool {
    let queue = |running: &Option<(u32, Rc<RefCell<ReadyQueue>>)>| match running {
        Some((running, ready)) if *running == number => ready
            .try_borrow_mut()
            .map(|mut ready| ready.push(id))
            .is_ok(),
        _ => false,
    };
    RUNNING
        .try_with(|running| queue(&running.borrow()))
        .unwrap_or(false)
}

/// Makes an executor the one running on this thread, until dropped.
struct Running {
    before: Option<(u32, Rc<RefCell<ReadyQueue>>)>,
}

impl Running {
    fn start(number: u32, ready: &Rc<RefCell<ReadyQueue>>) -> Running {
        let before = RUNNING.replace(Some((number, ready.clone())));
        Running { before }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.set(self.before.take());
    }
}

impl<'a> Executor<'a> {
    /// An executor whose tasks wait on `reactor`.
    pub fn new(reactor: Rc<Reactor>) -> Self {
        let inbox = Arc::new(Inbox {
            ids: Mutex::new(Vec::new()),
            sleeping: AtomicBool::new(false),
            reactor_poller: reactor.poller().clone(),
            notified: AtomicU64::new(0),
        });
        let number = INBOXES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(inbox.clone());
        Executor {
            reactor,
            tasks: RefCell::new(Slab::new()),
            spawner: Spawner {
                new_tasks: Rc::new(RefCell::new(Vec::new())),
            },
            number: u32::try_from(number).expect("fewer than 2^32 executors at once"),
            ready: Rc::default(),
            inbox,
            tick: RefCell::new(VecDeque::new()),
            meter: RefCell::new(None),
            queue: RefCell::new(ReadyQueueStats::default()),
            fresh: RefCell::new(HashSet::new()),
        }
    }

    /// Has `meter` watch the ticks and write `--stats` lines with the
    /// `traffic` the tasks count into, then what `more` adds.
    pub fn metered(
        self,
        meter: Meter<'a>,
        traffic: &'a Traffic,
        more: impl Fn(&mut Line) + 'a,
    ) -> Self {
        *self.meter.borrow_mut() = Some(Metered {
            meter,
            traffic,
            more: Box::new(more),
        });
        self
    }

    /// Writes a `--stats` line if one is due at `now` (or `last`, the
    /// final one at shutdown).
    pub fn report(&self, now: Instant, last: bool) {
        let mut metered = self.meter.borrow_mut();
        let Some(Metered {
            meter,
            traffic,
            more,
        }) = metered.as_mut()
        else {
            return;
        };
        if !last && !meter.due(now) {
            return;
        }
        // The accept loop is the main future, not a task: every task is a
        // client.
        let tasks = self.tasks() as u64;
        let mut queue = self.queue.borrow_mut();
        meter.report(now, last, *traffic, tasks, |line| {
            line.gauge("tasks", tasks)
                .gauge("timers", self.reactor.timers() as u64)
                .count(
                    "cross_wakeups",
                    self.inbox.notified.swap(0, Ordering::Relaxed),
                )
                .count("would_block", self.reactor.take_would_block());
            queue.fill(line);
            more(line);
        });
    }

    /// Drops every task (cancels it), running each one's destructors now.
    pub fn cancel_all(&self) {
        let trace = self.reactor.trace();
        for (id, _) in self.tasks.borrow().iter() {
            trace.task(
                id,
                format_args!(
                    "dropped while Pending at shutdown: cancelled (asyncio's Task.cancel() raises CancelledError at its await and lets it run its handlers; Rust runs none of its code again, only the destructors of what it holds: its socket closes)"
                ),
            );
        }
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        drop(tasks);
        self.spawner.new_tasks.borrow_mut().clear();
    }

    /// When the next `--stats` line is due, if any.
    fn report_deadline(&self) -> Option<Instant> {
        self.meter
            .borrow()
            .as_ref()
            .and_then(|m| m.meter.deadline())
    }

    /// A handle for spawning tasks from inside tasks.
    pub fn spawner(&self) -> Spawner<'a> {
        self.spawner.clone()
    }

    /// Queues `future` as a new task.
    pub fn spawn(&self, future: impl Future<Output = ()> + 'a) {
        self.spawner.spawn(future);
    }

    /// Tasks that have not completed.
    pub fn tasks(&self) -> usize {
        self.tasks.borrow().len() + self.spawner.new_tasks.borrow().len()
    }

    /// Runs `main` and every spawned task until `main` completes, and
    /// returns its output. Tasks still running stay in the executor.
    ///
    /// # Errors
    /// If waiting in the reactor fails.
    pub fn block_on<F: Future>(&self, main: F) -> io::Result<F::Output> {
        let mut main = pin!(main);
        let waker = task_waker(self.number, MAIN);
        let _running = Running::start(self.number, &self.ready);
        self.ready.borrow_mut().push(MAIN);
        self.admit_new_tasks();
        // Whether the last tick went on to the next without a wait.
        let mut skipped_wait = false;
        loop {
            // One tick: poll every task that was ready when it began. Tasks
            // woken during the tick run in the next one, after the reactor
            // has been asked (without blocking) what else is ready.
            self.empty_inbox();
            let mut tick = self.tick.borrow_mut();
            std::mem::swap(&mut *tick, &mut self.ready.borrow_mut().ids);
            {
                let mut queue = self.queue.borrow_mut();
                queue.turn(tick.len());
                queue.wakes += tick.len() as u64;
            }
            let mut polls = 0;
            while let Some(id) = tick.pop_front() {
                if polls == POLLS_PER_TICK {
                    // Enough for one tick: the rest go first in the next
                    // one, after the reactor has been asked what is ready.
                    tick.push_front(id);
                    self.requeue_first(&mut tick);
                    break;
                }
                polls += 1;
                self.reactor.budget().refill();
                if id == MAIN {
                    self.queue.borrow_mut().polls += 1;
                    self.ready.borrow_mut().unqueue(MAIN);
                    if let Poll::Ready(output) =
                        main.as_mut().poll(&mut Context::from_waker(&waker))
                    {
                        // Unpolled ids stay queued for a later block_on.
                        self.requeue_first(&mut tick);
                        return Ok(output);
                    }
                } else {
                    self.poll_task(id);
                }
            }
            drop(tick);
            // Tasks spawned during the tick are queued before the wait
            // below, which then only checks for readiness: they run next.
            // If nothing else is ready, they run at once, without the
            // wait: a new client's first message is usually there already.
            let woken = !self.ready.borrow().ids.is_empty();
            if self.admit_new_tasks() && !woken && !skipped_wait {
                skipped_wait = true;
                continue;
            }
            skipped_wait = false;
            self.inbox.sleeping.store(true, Ordering::SeqCst);
            // Checked after announcing the sleep, so that a wake from
            // another thread either is seen here or notifies the poller.
            let ready = !self.ready.borrow().ids.is_empty() || !self.inbox.is_empty();
            let timeout = match self.report_deadline() {
                _ if ready => Some(std::time::Duration::ZERO),
                Some(due) => Some(due.saturating_duration_since(Instant::now())),
                None => None,
            };
            if let Some(metered) = self.meter.borrow_mut().as_mut() {
                metered.meter.waiting();
            }
            let waited = self.reactor.wait(timeout);
            if let Some(metered) = self.meter.borrow_mut().as_mut() {
                metered.meter.woke_now(*waited.as_ref().unwrap_or(&0));
            }
            // Awake again: wakes from here on need no notify().
            self.inbox.sleeping.store(false, Ordering::SeqCst);
            waited?;
            self.reactor.dispatch();
            if self.report_deadline().is_some() {
                self.report(Instant::now(), false);
            }
        }
    }

    /// Puts the ids left in `tick` back at the front of the ready queue, in
    /// their order, ahead of the tasks woken during the tick.
    fn requeue_first(&self, tick: &mut VecDeque<usize>) {
        let ready = &mut self.ready.borrow_mut().ids;
        while let Some(id) = tick.pop_back() {
            ready.push_front(id);
        }
    }

    /// Queues the tasks woken from other threads since the last tick.
    fn empty_inbox(&self) {
        let mut inbox = self
            .inbox
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ready = self.ready.borrow_mut();
        for id in inbox.drain(..) {
            ready.push(id);
        }
    }

    /// Moves newly spawned tasks into the table and queues them to run;
    /// says whether there were any.
    fn admit_new_tasks(&self) -> bool {
        let mut new_tasks = self.spawner.new_tasks.borrow_mut();
        if new_tasks.is_empty() {
            return false;
        }
        let mut tasks = self.tasks.borrow_mut();
        for future in new_tasks.drain(..) {
            let entry = tasks.vacant_entry();
            assert!(entry.key() < MAIN, "fewer than 2^32 - 1 tasks at once");
            self.ready.borrow_mut().push(entry.key());
            if self.reactor.trace().is_on() {
                self.reactor.trace().task(
                    entry.key(),
                    format_args!("spawned (asyncio's create_task): queued to be polled"),
                );
                self.fresh.borrow_mut().insert(entry.key());
            }
            entry.insert(Some(future));
        }
        true
    }

    /// `Task.__step`: polls a task once; drops it if it completed.
    fn poll_task(&self, id: usize) {
        // First, so that a later task with this id is not taken for queued.
        self.ready.borrow_mut().unqueue(id);
        let mut future = {
            let mut tasks = self.tasks.borrow_mut();
            // A stale wake-up of a task that already completed.
            let Some(Some(future)) = tasks.get_mut(id).map(Option::take) else {
                return;
            };
            future
        };
        let waker = task_waker(self.number, id);
        // No borrow is held while the task runs: it may spawn, or drop
        // sockets that deregister from the reactor.
        self.queue.borrow_mut().polls += 1;
        let trace = self.reactor.trace();
        trace.running(id);
        let poll = future.as_mut().poll(&mut Context::from_waker(&waker));
        if trace.is_on() {
            self.trace_poll(id, poll.is_ready());
        }
        trace.stopped();
        match poll {
            Poll::Ready(()) => {
                self.tasks.borrow_mut().remove(id);
                drop(future);
            }
            Poll::Pending => self.tasks.borrow_mut()[id] = Some(future),
        }
    }

    /// The `--trace` line of one poll: what brought the task here (spawned,
    /// or its waker called), and how the poll ended.
    fn trace_poll(&self, id: usize, finished: bool) {
        let how = if self.fresh.borrow_mut().remove(&id) {
            "polled for the first time"
        } else {
            "woken (its waker queued it), polled"
        };
        let outcome = if finished {
            "Ready: it returned, the executor drops it"
        } else {
            "Pending: suspended at an .await, its waker left with what it awaits"
        };
        self.reactor
            .trace()
            .task(id, format_args!("{how} → {outcome}"));
    }
}

impl Drop for Executor<'_> {
    fn drop(&mut self) {
        INBOXES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_remove(self.number as usize);
        // Drop the tasks outside of the RefCell borrow: their destructors
        // may use the reactor.
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        drop(tasks);
        let new_tasks = std::mem::take(&mut *self.spawner.new_tasks.borrow_mut());
        drop(new_tasks);
    }
}

/// Gives other tasks a turn: `Pending` once, after waking itself
/// (asyncio's `await asyncio.sleep(0)`).
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// The result of [`select`]: which future finished first.
#[derive(Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first future finished first.
    Left(A),
    /// The second future finished first.
    Right(B),
}

/// Waits for whichever of two futures finishes first and drops the other.
pub async fn select<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(output) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(output));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::super::reactor::{Async, sleep};
    use super::*;
    use std::cell::Cell;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    fn executor<'a>() -> (Rc<Reactor>, Executor<'a>) {
        let reactor = Reactor::new(crate::poller::Backend::default()).unwrap();
        let executor = Executor::new(reactor.clone());
        (reactor, executor)
    }

    /// Spawned tasks run to completion and leave the table.
    #[test]
    fn tasks_run_to_completion() {
        // Declared before the executor, so that it outlives the tasks.
        let done = Cell::new(0);
        let (_reactor, executor) = executor();
        for _ in 0..3 {
            executor.spawn(async {
                yield_now().await;
                done.set(done.get() + 1);
            });
        }
        executor
            .block_on(async {
                while done.get() < 3 {
                    yield_now().await;
                }
            })
            .unwrap();
        assert_eq!(done.get(), 3);
        assert_eq!(executor.tasks(), 0);
    }

    /// A task spawned from inside a task runs too.
    #[test]
    fn a_task_spawned_from_a_task_runs() {
        let inner_ran = Cell::new(false);
        let (_reactor, executor) = executor();
        let spawner = executor.spawner();
        let inner_ran = &inner_ran;
        let inner_spawner = spawner.clone();
        spawner.spawn(async move {
            inner_spawner.spawn(async move { inner_ran.set(true) });
        });
        executor
            .block_on(async {
                while !inner_ran.get() {
                    yield_now().await;
                }
            })
            .unwrap();
        assert!(inner_ran.get());
    }

    /// A pending task is polled again when, and only when, it is woken, and
    /// a wake from another thread interrupts the executor's wait.
    #[test]
    fn a_woken_task_is_polled_exactly_when_woken() {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (_reactor, executor) = executor();
            let polls = Cell::new(0);
            let (waker_tx, waker_rx) = std::sync::mpsc::channel::<Waker>();
            let woken = Arc::new(AtomicBool::new(false));
            let flag = woken.clone();
            let waker_thread = std::thread::spawn(move || {
                let waker = waker_rx.recv().unwrap();
                // Wake only after the executor had every chance to poll
                // spuriously; it must not have.
                std::thread::sleep(Duration::from_millis(100));
                flag.store(true, Ordering::SeqCst);
                waker.wake();
            });
            executor
                .block_on(poll_fn(|cx| {
                    polls.set(polls.get() + 1);
                    if polls.get() == 1 {
                        waker_tx.send(cx.waker().clone()).unwrap();
                    }
                    if woken.load(Ordering::SeqCst) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                }))
                .unwrap();
            waker_thread.join().unwrap();
            tx.send(polls.get()).unwrap();
        });
        let polls = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the executor woke up");
        thread.join().unwrap();
        assert_eq!(polls, 2, "polled once at first and once when woken");
    }

    /// A wake that comes after its task has ended is harmless, and does not
    /// keep the next task given the same id from running.
    #[test]
    fn a_stale_wake_does_not_stop_the_next_task_with_its_id() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ran = Cell::new(false);
            let (_reactor, executor) = executor();
            // Wakes itself and ends in the same poll: its id is queued
            // with no task behind it.
            executor.spawn(poll_fn(|cx| {
                cx.waker().wake_by_ref();
                Poll::Ready(())
            }));
            executor.block_on(yield_now()).unwrap();
            executor.block_on(yield_now()).unwrap();
            assert_eq!(executor.tasks(), 0);
            executor.spawn(async { ran.set(true) });
            executor
                .block_on(async {
                    while !ran.get() {
                        yield_now().await;
                    }
                })
                .unwrap();
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the task given the stale id ran");
    }

    /// A connection's task ends when the peer closes, and its socket leaves
    /// the reactor.
    #[test]
    fn a_dropped_connection_task_is_cleaned_up() {
        let (reactor, executor) = executor();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        server_side.set_nonblocking(true).unwrap();
        let stream = Async::new(server_side, &reactor).unwrap();
        let got = Rc::new(Cell::new(None));
        let result = got.clone();
        executor.spawn(async move {
            let mut total = 0;
            while let Ok(data) = stream.recv().await {
                if data.is_empty() {
                    break;
                }
                total += data.len();
            }
            result.set(Some(total));
        });
        assert_eq!(reactor.sources(), 1);
        client.write_all(b"bye").unwrap();
        drop(client);
        executor
            .block_on(async {
                while got.get().is_none() {
                    sleep(&reactor, Duration::from_millis(1)).await;
                }
            })
            .unwrap();
        assert_eq!(got.get(), Some(3));
        assert_eq!(executor.tasks(), 0);
        assert_eq!(reactor.sources(), 0);
    }

    /// A task whose socket is always ready yields once its budget is
    /// spent: with a budget of 2, ten operations take five polls after the
    /// one that waits for the first readiness (without a budget: one).
    #[test]
    fn a_spent_budget_makes_a_task_yield() {
        let polls = Rc::new(Cell::new(0));
        let done = Rc::new(Cell::new(false));
        let (reactor, executor) = executor();
        reactor.set_budget(2);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        server_side.set_nonblocking(true).unwrap();
        client.write_all(b"x").unwrap();
        let stream = Async::new(server_side, &reactor).unwrap();
        let (counted, finished) = (polls.clone(), done.clone());
        executor.spawn(async move {
            let operations = async {
                for _ in 0..10 {
                    stream.readable().await.unwrap();
                }
            };
            let mut operations = pin!(operations);
            poll_fn(|cx| {
                counted.set(counted.get() + 1);
                operations.as_mut().poll(cx)
            })
            .await;
            finished.set(true);
        });
        executor
            .block_on(async {
                while !done.get() {
                    yield_now().await;
                }
            })
            .unwrap();
        assert_eq!(polls.get(), 6);
    }

    /// Timers fire in the order of their deadlines, not of their creation.
    #[test]
    fn timers_fire_in_order() {
        let order = RefCell::new(Vec::new());
        let (reactor, executor) = executor();
        for ms in [30, 10, 20] {
            let (reactor, order) = (reactor.clone(), &order);
            executor.spawn(async move {
                sleep(&reactor, Duration::from_millis(ms)).await;
                order.borrow_mut().push(ms);
            });
        }
        executor
            .block_on(sleep(&reactor, Duration::from_millis(40)))
            .unwrap();
        // Even on a stalled machine every timer is due by now, and due
        // timers are woken earliest first.
        while order.borrow().len() < 3 {
            executor.block_on(yield_now()).unwrap();
        }
        assert_eq!(*order.borrow(), [10, 20, 30]);
    }
}
