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
//! How a waker finds its task again, without allocating or counting
//! references, is the performance part, in [`super::wake`]: a reader can
//! take it as "a waker puts its task's id on the ready queue, once".
//!
//! Fairness comes from two bounds. A task may complete only so many I/O
//! operations per poll (the reactor's cooperative budget, `--budget`):
//! then its `await` answers `Pending`, it wakes itself, and it runs again in
//! the next tick, behind every task that was ready before it. And a tick
//! polls at most `POLLS_PER_TICK` tasks (`POLLS_PER_TICK_LEVEL` where the
//! reactor registers level-triggered) before the executor asks the
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
//! Never twice in a row: at most one extra tick between two waits. The
//! admission is in `admission.rs`, with the performance parts: the
//! wakers in [`super::wake`], the budget in the reactor's `budget.rs`.
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
use std::task::{Context, Poll};

use slab::Slab;

use super::reactor::Reactor;
use super::wake::{INBOXES, Inbox, ReadyQueue, Running, task_waker};
use crate::lab::live::{Line, ReadyQueue as ReadyQueueStats, Traffic};
use crate::lab::meter::Meter;
use std::time::Instant;

type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// What a task's slot holds while its future is out being polled: a
/// future that never completes, in a box of nothing (no allocation).
fn placeholder<'a>() -> Task<'a> {
    Box::pin(std::future::pending())
}

/// The id the future given to [`Executor::block_on`] is woken with; task
/// ids are below it.
pub(super) const MAIN: usize = u32::MAX as usize;

/// Task polls per tick at most, before the executor asks the reactor
/// (without blocking) what became ready. A tick already polls only the
/// tasks that were ready when it began; this bounds it when thousands are
/// (tokio checks for I/O every 61 polls). With the cooperative budget it
/// bounds how long readiness can go unheard: 128 polls of at most
/// [`DEFAULT_BUDGET`](crate::serve::DEFAULT_BUDGET) operations each.
const POLLS_PER_TICK: usize = 128;

/// The same bound where the reactor registers level-triggered (on
/// `polling`): there a look at the poller reports again every socket still
/// ready, whose task is queued already, and makes the kernel check each of
/// them; so the look comes once per batch a wait can hand back (1,024
/// events), as the selector's next wait does. With 128, a thousand busy
/// clients cost async on `polling` 15% more CPU per message than on
/// `--poller epoll` (`docs/performance.md`).
const POLLS_PER_TICK_LEVEL: usize = 1024;

/// Runs futures on this thread until the one given to `block_on` completes.
/// Tasks may borrow anything that outlives `'a`; any still running when the
/// executor is dropped are dropped with it (cancelled).
pub struct Executor<'a> {
    reactor: Rc<Reactor>,
    /// The tasks by id. While a task is out being polled, its slot holds
    /// a [`placeholder`] (no `Option`: 8 bytes less in every slot).
    tasks: RefCell<Slab<Task<'a>>>,
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
        let per_tick = match self.reactor.is_level() {
            true => POLLS_PER_TICK_LEVEL,
            false => POLLS_PER_TICK,
        };
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
                if polls == per_tick {
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

    /// `Task.__step`: polls a task once; drops it if it completed.
    fn poll_task(&self, id: usize) {
        // First, so that a later task with this id is not taken for queued.
        self.ready.borrow_mut().unqueue(id);
        let mut future = {
            let mut tasks = self.tasks.borrow_mut();
            // A stale wake-up of a task that already completed.
            let Some(slot) = tasks.get_mut(id) else {
                return;
            };
            std::mem::replace(slot, placeholder())
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
                drop(self.tasks.borrow_mut().remove(id));
                drop(future);
            }
            Poll::Pending => self.tasks.borrow_mut()[id] = future,
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

mod admission;

#[cfg(test)]
mod tests;
